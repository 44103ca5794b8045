"""Background work: handle recorded pushes, send queued replies.

It runs in ``wxpush deliver`` (the delivery process ``wxpush serve`` starts with a SQLite
store) or, with Redis, in every gunicorn worker: started by gunicorn's ``post_worker_init``
hook and stopped by ``worker_exit``. Stopping means: stop claiming, let in-flight work
finish. Pushes are handled as soon as they are recorded (with the SQLite store: once the
ingester has moved them from the journals into the inbox, a few ms later, which is where
retries are dropped); pushes whose handler died elsewhere are claimed when their lease runs
out; senders wake when this process queues a reply and otherwise poll, so replies queued by
other processes or hosts go out too. All of it runs below the request threads' CPU priority.
A push whose handling fails is tried again later, and set aside as dead with its error once
it has been tried ``handle_attempts`` times (a handler that died counts as a try); a loop
whose store fails tries again less and less often (``webhook.backoff.Loop``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from webhook.backoff import Loop, backoff
from webhook.delivery.handling import Responder, failure, read_recorded, unreadable_key
from webhook.delivery.heartbeat import Heartbeat
from webhook.delivery.intake import inbox_key, log_duplicate
from webhook.delivery.sender import Sender
from webhook.errors import MalformedRequest, StoreError
from webhook.logsafe import Repeats, shown
from webhook.push.messages import Message
from webhook.routing.router import Route
from webhook.store import InboxEntry, Store

__all__ = ["Background"]

log = logging.getLogger(__name__)
NICE = 10          # background threads run this much nicer than the request threads
AHEAD = 256        # ingested pushes waiting for a handler thread, at most


def _lower_priority() -> None:
    """WeChat's 5 s answer comes first; a reply can wait a few ms. Linux gives every thread
    its own nice value, so a busy worker spends its CPU on answers before handlers and sends."""
    if sys.platform == "linux":
        thread = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, thread,
                           min(19, os.getpriority(os.PRIO_PROCESS, thread) + NICE))
        except OSError:
            pass


class Background:
    """``handle_attempts``: how many times a push is handled before it is set aside as
    dead (the first retry ``handle_retry`` seconds after a failure, then twice as long each
    time, at most a lease); ``retry_base`` / ``retry_cap``: the backoff of a loop whose
    step keeps failing; ``repeats``: how often a repeated error is logged; ``heartbeat``:
    told as each loop goes round (and each reply is delivered), for the supervisor of a
    delivery process."""

    def __init__(self, *, store: Store, responder: Responder, sender: Sender, owner: str,
                 lease: float, dedupe_ttl: float, senders: int = 2, handler_threads: int = 2,
                 handle_attempts: int = 5, handle_retry: float = 1.0, poll: float = 0.1,
                 ingest_poll: float = 0.005, retry_base: float = 0.05, retry_cap: float = 10.0,
                 repeats: Repeats | None = None, heartbeat: Heartbeat | None = None) -> None:
        self._store, self._responder, self._sender = store, responder, sender
        self._owner, self._lease, self._senders = owner, lease, senders
        self._attempts, self._handle_retry = handle_attempts, handle_retry
        self._ttl, self._pool_size = dedupe_ttl, handler_threads
        self._poll, self._ingest_poll = poll, ingest_poll
        self._retry_base, self._retry_cap = retry_base, retry_cap
        self._repeats, self._heartbeat = repeats or Repeats(), heartbeat
        self._pool: ThreadPoolExecutor | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._inflight: set[str] = set()     # keys this process is handling right now
        self._inflight_lock = threading.Lock()
        self._queued = 0                     # submitted to the pool, not yet started

    def submit(self, entry: InboxEntry, message: Message | None = None,
               route: Route | None = None) -> None:
        """Handle a recorded push (``message`` and ``route``: its payload, parsed and routed
        on the request path, if at hand); left for the sweeper if not running."""
        pool = self._pool
        if pool is not None and not self._stopping.is_set():
            with self._inflight_lock:
                self._queued += 1
            try:
                pool.submit(self._handle, entry, message, route)
            except RuntimeError:   # shutting down: the sweeper of a live process takes it
                with self._inflight_lock:
                    self._queued -= 1

    def start(self) -> None:
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix="wxpush-handler",
                                        initializer=_lower_priority)
        steps = [("inbox sweep", self._sweep),
                 *([("inbox ingest", self._ingest)] if self._store.journaled else []),
                 *[("outbox send", self._send)] * self._senders]
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
        """Stop claiming; wait for running handlers and in-flight sends."""
        self._stopping.set()
        self._wake.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
        for thread in self._threads:
            thread.join(timeout)
        self._pool, self._threads = None, []

    def _run(self, name: str, step: Callable[[], float]) -> None:
        _lower_priority()
        Loop(name, step, stop=self._stopping, wait=self._idle if name == "outbox send" else None,
             base=self._retry_base, cap=self._retry_cap, repeats=self._repeats,
             beat=self._beat, logger=log).run()

    def _handle(self, entry: InboxEntry, message: Message | None, route: Route | None) -> None:
        with self._inflight_lock:
            self._inflight.add(entry.key)
            self._queued -= 1
        try:
            if self._responder.respond(entry, message, route):
                self._wake.set()
        except Exception as exc:
            self._failed(entry, exc)
        finally:
            with self._inflight_lock:
                self._inflight.discard(entry.key)

    def _failed(self, entry: InboxEntry, exc: Exception) -> None:
        """Try a push again later, or set it aside once it has had its attempts (at once
        if it cannot be parsed: that will not change). A store that fails is no fault of
        the push: it is left to its lease, and a sweeper takes it up again."""
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
        except StoreError as noted:   # its lease runs out and a sweeper tries again
            self._repeats.log(log, logging.ERROR, "handling store", "handling failed key=%s "
                              "error=%s, not noted: %s", shown(entry.key), error, shown(noted, 200))

    def _set_aside(self, key: str, attempts: int, error: str) -> None:
        self._repeats.log(log, logging.WARNING, "set aside", "push set aside key=%s "
                          "attempts=%d error=%s (wxpush inbox list --state dead)", shown(key),
                          attempts, error)

    def _sweep(self) -> float:
        """Renew the leases of running handlers, then claim pushes whose handler died."""
        with self._inflight_lock:
            running = list(self._inflight)
        for key in running:
            self._store.inbox_renew(key, owner=self._owner, lease=self._lease)
        for entry in self._store.inbox_claim(owner=self._owner, lease=self._lease, limit=64,
                                             max_attempts=self._attempts):
            if entry.state == "dead":
                self._set_aside(entry.key, entry.attempts, entry.error or "")
                continue
            log.info("push reclaimed key=%s attempts=%d", shown(entry.key), entry.attempts)
            self.submit(entry)
        return max(0.2, min(5.0, self._lease / 4))

    def _ingest(self) -> float:
        """Move logged pushes into the inbox in batches, handling the new ones. Ingesting
        leases a push, so under a burst the rest waits in the journal, not leased in a queue
        longer than the lease. The queue is refilled to ``AHEAD`` once half of it is taken:
        a batch at a time, where topping it up would commit a few pushes per poll."""
        if self._queued > AHEAD // 2:
            return self._ingest_poll
        parsed: dict[str, Message] = {}   # read once, to key it and to handle it
        unreadable: dict[str, str] = {}   # key -> why it cannot be

        def key(entry: InboxEntry) -> str:
            try:
                message = read_recorded(entry)
            except Exception as exc:   # (a parser bug too: one push must not stop the rest)
                keyed = unreadable_key(entry)
                unreadable[keyed] = failure(exc)
                return keyed
            keyed = inbox_key(entry.appid, message)
            parsed[keyed] = message
            return keyed

        new, seen = self._store.inbox_ingest(owner=self._owner, lease=self._lease,
                                             ttl=self._ttl, key=key,
                                             limit=AHEAD - self._queued)
        for entry in seen:
            log_duplicate(entry)
        for entry in new:
            if entry.key in unreadable:   # answered, but no handler can take it
                if self._store.inbox_dead(entry.key, owner=self._owner,
                                          error=unreadable[entry.key]):
                    self._set_aside(entry.key, entry.attempts, unreadable[entry.key])
            else:
                self.submit(entry, parsed.get(entry.key))
        return self._ingest_poll

    def _send(self) -> float:
        """Deliver due replies (a send may take seconds: each is a sign of progress); when
        there were none, wait for a wake-up or the next poll."""
        return 0.0 if self._sender.run_once(progress=self._beat) else self._poll

    def _idle(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()
