"""The delivery process's work: handle recorded pushes, send queued replies.

It runs in ``wxpush deliver`` (the delivery process ``wxpush serve`` starts beside gunicorn,
with either store). Stopping means: stop taking, let in-flight work finish. One loop takes
recorded pushes as soon as they are recorded (the store wakes it) and those whose handler
died, or failed and waited, when their lease runs out, and hands them to handler threads.
Another claims due replies, as many as may be in flight (``webhook.delivery.inflight``),
and starts a send for each at once (a claimed row never waits for a free sender while its
lease runs out); it wakes when this process queues a reply or a send ends, and otherwise
polls, so replies queued by other processes or hosts go out too. A push whose handling fails
is tried again later, and set aside as dead with its error once it has been tried
``handle_attempts`` times (a handler that died counts as a try); a loop whose store fails
tries again less and less often (``webhook.backoff.Loop``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from webhook.backoff import Loop, backoff
from webhook.delivery.handling import Responder, failure
from webhook.delivery.heartbeat import Heartbeat
from webhook.delivery.inflight import InFlight
from webhook.delivery.sender import Sender
from webhook.errors import MalformedRequest, StoreError
from webhook.logsafe import Repeats, shown
from webhook.store import InboxEntry, OutboxRow, Store

__all__ = ["Background"]

log = logging.getLogger(__name__)
AHEAD = 256        # taken pushes not yet handled, at most
TAKE_WAIT = 0.5    # seconds the take loop waits for a push to be recorded, between rounds
FULL_PAUSE = 0.005  # seconds it waits while the handlers are behind
GATHER = 0.01      # seconds replies gather after a claim that took all that were due; paired
                   # bench/reply_throughput.py runs with it at 0 show the CPU per reply it spares


class Background:
    """``senders``: at most this many sends in flight (0: this process sends nothing);
    ``handle_attempts``: how many times a push is handled before it is set aside as
    dead (the first retry ``handle_retry`` seconds after a failure, then twice as long each
    time, at most a lease); ``retry_base`` / ``retry_cap``: the backoff of a loop whose
    step keeps failing; ``repeats``: how often a repeated error is logged; ``heartbeat``:
    told as each loop goes round (and each reply is delivered), for the supervisor of a
    delivery process."""

    def __init__(self, *, store: Store, responder: Responder, sender: Sender, owner: str,
                 lease: float, senders: int = 128, handler_threads: int = 2,
                 handle_attempts: int = 5, handle_retry: float = 1.0, poll: float = 0.1,
                 retry_base: float = 0.05, retry_cap: float = 10.0,
                 repeats: Repeats | None = None, heartbeat: Heartbeat | None = None) -> None:
        self._store, self._responder, self._sender = store, responder, sender
        self._owner, self._lease, self._senders = owner, lease, senders
        self._attempts, self._handle_retry = handle_attempts, handle_retry
        self._pool_size, self._poll = handler_threads, poll
        self._retry_base, self._retry_cap = retry_base, retry_cap
        self._repeats, self._heartbeat = repeats or Repeats(), heartbeat
        self._pool: ThreadPoolExecutor | None = None
        self._sends: ThreadPoolExecutor | None = None
        self._inflight_sends = InFlight(senders) if senders else None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._inflight: set[str] = set()     # keys taken and not yet handled: leased to us
        self._inflight_lock = threading.Lock()
        self._renew_at = 0.0                 # when their leases are renewed next

    def _submit(self, entry: InboxEntry) -> None:
        """Handle a taken push; left to its lease if the process is stopping."""
        with self._inflight_lock:
            self._inflight.add(entry.key)
        try:
            self._pool.submit(self._handle, entry)
        except RuntimeError:   # shutting down: taken again when its lease runs out
            with self._inflight_lock:
                self._inflight.discard(entry.key)

    def start(self) -> None:
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix="wxpush-handler")
        steps = [("inbox take", self._take)]
        if self._senders:
            self._sends = ThreadPoolExecutor(self._senders, thread_name_prefix="wxpush-send")
            steps.append(("outbox claim", self._claim))
        names = [f"wxpush-{name.split()[1]}-{i}" for i, (name, _) in enumerate(steps)]
        if self._heartbeat is not None:
            self._heartbeat.watch(names)
        self._threads = [threading.Thread(target=self._run, args=(name, step), daemon=True,
                                          name=thread)
                         for thread, (name, step) in zip(names, steps)]
        for thread in self._threads:
            thread.start()

    def _beat(self) -> None:
        """This thread's loop went round (a heartbeat names the loop by its thread)."""
        if self._heartbeat is not None:
            self._heartbeat.beat(threading.current_thread().name)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking; wait for in-flight sends and for the handlers of what was taken."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        for pool in (self._pool, self._sends):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=False)
        self._pool, self._sends, self._threads = None, None, []

    def _run(self, name: str, step: Callable[[], float]) -> None:
        Loop(name, step, stop=self._stopping, wait=self._idle if name == "outbox claim" else None,
             base=self._retry_base, cap=self._retry_cap, repeats=self._repeats,
             beat=self._beat, logger=log).run()

    def _handle(self, entry: InboxEntry) -> None:
        try:
            if self._responder.respond(entry):
                self._wake.set()
        except Exception as exc:
            self._failed(entry, exc)
        finally:
            with self._inflight_lock:
                self._inflight.discard(entry.key)

    def _failed(self, entry: InboxEntry, exc: Exception) -> None:
        """Try a push again later, or set it aside once it has had its attempts (at once
        if it cannot be parsed: that will not change). A store that fails is no fault of
        the push: it is left to its lease, and taken again when that runs out."""
        error = failure(exc)
        # The traceback may quote the message: DEBUG only, like a handler's own failure.
        log.debug("handling failed key=%s", shown(entry.key), exc_info=exc)
        try:
            if isinstance(exc, StoreError):
                self._repeats.log(log, logging.ERROR, "handling store", "handling failed "
                                  "key=%s error=%s: %s; tried again when its lease runs out",
                                  shown(entry.key), error, shown(exc, 200))
            elif entry.attempts >= self._attempts or isinstance(exc, MalformedRequest):
                if self._store.inbox_dead(entry.key, owner=self._owner, error=error):
                    self._set_aside(entry.key, entry.attempts, error)
            else:
                delay = backoff(entry.attempts - 1, base=self._handle_retry, cap=self._lease)
                self._store.inbox_retry(entry.key, owner=self._owner, error=error,
                                        next_at=self._store.clock() + delay)
                self._repeats.log(log, logging.ERROR, f"handling {error}",
                                  "handling failed key=%s attempts=%d/%d error=%s; "
                                  "tried again in %.2f s", shown(entry.key), entry.attempts,
                                  self._attempts, error, delay)
        except StoreError as noted:   # its lease runs out and it is taken again
            self._repeats.log(log, logging.ERROR, "handling store", "handling failed key=%s "
                              "error=%s, not noted: %s", shown(entry.key), error, shown(noted, 200))

    def _set_aside(self, key: str, attempts: int, error: str) -> None:
        self._repeats.log(log, logging.WARNING, "set aside", "push set aside key=%s "
                          "attempts=%d error=%s (wxpush inbox list --state dead)", shown(key),
                          attempts, error)

    def _take(self) -> float:
        """Renew the leases of what was taken now and then (queued or being handled); take due
        pushes, waiting for one to be recorded while none is. Up to ``AHEAD`` are taken once
        half of them are handled: a batch at a time, where topping them up would commit a
        few pushes per round; the rest waits in the store, unleased."""
        with self._inflight_lock:
            taken = list(self._inflight)
        if time.monotonic() >= self._renew_at:
            self._renew_at = time.monotonic() + max(0.2, min(5.0, self._lease / 4))
            for key in taken:
                self._store.inbox_renew(key, owner=self._owner, lease=self._lease)
        if len(taken) > AHEAD // 2:
            return FULL_PAUSE
        for entry in self._store.inbox_take(owner=self._owner, lease=self._lease,
                                            limit=AHEAD - len(taken),
                                            max_attempts=self._attempts, wait=TAKE_WAIT):
            if entry.state == "dead":
                self._set_aside(entry.key, entry.attempts, entry.error or "")
            else:
                if entry.attempts > 1:
                    log.info("push taken again key=%s attempts=%d", shown(entry.key),
                             entry.attempts)
                self._submit(entry)
        return 0.0

    def _claim(self) -> float:
        """Claim as many due replies as may be sent now and start their sends; while none
        may start, wait for a send to end (or the next poll); when none was due, wait for a
        wake-up or the next poll. After a claim that took all that were due, the replies
        queued meanwhile are let gather a moment, to be claimed in one write rather than
        one write each."""
        sends = self._inflight_sends
        free = sends.free() or sends.wait_free(self._poll)
        if not free:
            return 0.0
        rows = self._store.outbox_claim(owner=self._owner, lease=self._lease, limit=free)
        for row in rows:
            started = sends.start()
            try:
                self._sends.submit(self._deliver, row, started)
            except RuntimeError:   # shutting down: claimed again when its lease runs out
                sends.end(started, backed_off=False)
        if not rows:
            return self._poll
        if len(rows) < free:
            self._stopping.wait(GATHER)
        return 0.0

    def _deliver(self, row: OutboxRow, started: float) -> None:
        outcome = "failed"
        try:
            outcome = self._sender.deliver(row)
        except Exception as exc:   # the store failed (a read, or the mark after the send)
            self._repeats.log(log, logging.ERROR, "send store", "send failed id=%s error=%s: "
                              "%s; claimed again when its lease runs out", row.id,
                              type(exc).__name__, shown(exc, 200))
        finally:
            self._inflight_sends.end(started, backed_off=outcome == "busy")
            self._wake.set()

    def _idle(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()
