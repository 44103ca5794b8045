"""gunicorn's gthread worker, reading requests whole on its loop, taking no more than its
share of the connections, and answering quick requests on its own loop.

Every gthread worker waits on the same listening socket and whichever wakes first accepts. A
busy worker is awake more often, so it wins more often: under a proxy's 32 kept-alive
connections two workers split them 30/2 or 26/6, one queueing pushes while the other idled
(gunicorn issues #2817 and #3433, left to the kernel's scheduler there). Here the master and
its workers share one page where each worker keeps how many connections it holds. A worker
holding more than another one lets a new connection wait up to ``DEFER`` for that worker to
take it, and takes it itself if nobody did: a stuck or busy worker delays a connection by that
much at most.

``gunicorn_conf.py`` gives each worker its place in the page (``take_slot`` in ``pre_fork``,
``free_slot`` in ``child_exit``, both in the master).

gthread hands every request to a pool thread and the connection back to its loop through a
pipe: two GIL hand-offs per request, and the pool's threads sharing the GIL take turns on
requests in no fair order, so an answer's wait varied fourfold under load. An app names the
paths whose requests wait on nothing but the CPU (``inline_paths``: the push path, when the
store journals). The loop reads every request whole before anyone handles it
(``webhook.server.wholeworker``); such a request is answered by the loop itself
(``on_loop``), in the order requests came. Any other one (another path, a chunked body) goes
to the pool.
"""

from __future__ import annotations

import mmap
import re
import time
from typing import Any

from webhook.server.wholeworker import WholeRequestWorker

__all__ = ["FairThreadWorker", "take_slot", "free_slot", "request_starts", "whole_request",
           "DEFER"]

# Python's default GIL switch interval: what the less loaded worker may need to reach its accept.
DEFER = 0.005
SLOTS = 64                      # workers beyond this many accept as plain gthread workers do
_ABSENT = -1                    # no worker, or one that is not (or no longer) accepting
_HEAD_END = b"\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)[ \t]*(?=\r\n)", re.IGNORECASE)
_CODED = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)

# Anonymous and shared: created in the master when gunicorn loads the worker class, inherited
# by every worker it forks.
_page = mmap.mmap(-1, SLOTS * 4)
_counts = memoryview(_page).cast("i")
for _i in range(SLOTS):
    _counts[_i] = _ABSENT


def request_starts(paths: tuple[str, ...]) -> tuple[bytes, ...]:
    """How a request line for one of ``paths`` starts (GET or POST)."""
    return tuple(f"{method} {path}".encode("ascii") for path in paths for method in ("GET", "POST"))


def whole_request(data: bytes | bytearray, size: int) -> bool:
    """Whether ``data[:size]`` is exactly one HTTP/1.1 request, head and body: no more (a
    pipelined request), no less, nothing chunked, one Content-Length or none: one the loop
    may answer."""
    end = data.find(_HEAD_END, 0, size)
    if end < 0:
        return False
    head = end + 2                    # through the last header's CRLF
    if _CODED.search(data, 0, head):
        return False
    lengths = _LENGTH.findall(data, 0, head)
    if len(lengths) > 1:
        return False
    return size == end + 4 + (int(lengths[0]) if lengths else 0)


def take_slot(server: Any, worker: Any) -> None:
    """gunicorn ``pre_fork`` (master): a place the worker's live siblings do not hold."""
    taken = {getattr(w, "slot", None) for w in server.WORKERS.values()}
    worker.slot = next((i for i in range(SLOTS) if i not in taken), None)
    if worker.slot is not None:
        _counts[worker.slot] = _ABSENT


def free_slot(worker: Any) -> None:
    """gunicorn ``child_exit`` (master): a worker that died, even by SIGKILL, holds nothing."""
    if getattr(worker, "slot", None) is not None:
        _counts[worker.slot] = _ABSENT


class FairThreadWorker(WholeRequestWorker):
    """A worker that publishes its connection count and defers to a less loaded one, and
    answers whole requests on its app's ``inline_paths`` itself."""

    slot: int | None = None
    _waiting_until: float | None = None     # the listener is off this worker's poller till then
    _running = False
    _nr_conns = 0
    _quick: tuple[bytes, ...] = ()          # request-line starts of the app's inline_paths

    @property  # type: ignore[override]
    def nr_conns(self) -> int:
        return self._nr_conns

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:
        self._nr_conns = value
        self._publish()

    def _publish(self) -> None:
        if self.slot is not None:
            _counts[self.slot] = self._nr_conns if self._running and self.alive else _ABSENT

    def run(self) -> None:
        self._running = True
        self._publish()
        self._quick = request_starts(getattr(self.wsgi, "inline_paths", ()))
        self.log.info("Worker accepting connections (pid: %s)", self.pid)
        super().run()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: this worker stops accepting, so nobody waits for it to take a connection."""
        super().handle_exit(sig, frame)
        self._publish()

    def on_loop(self, conn: Any, request: bytes) -> bool:
        return bool(self._quick) and request.startswith(self._quick) \
            and whole_request(request, len(request))

    def accept(self, listener: Any) -> None:
        if self._others_hold_fewer():
            self._waiting_until = time.monotonic() + DEFER
            self.set_accept_enabled(False)
            return
        super().accept(listener)

    def _others_hold_fewer(self) -> bool:
        mine = self._nr_conns
        return self.slot is not None and any(
            0 <= n < mine for i, n in enumerate(_counts) if i != self.slot)

    def set_accept_enabled(self, enabled: bool) -> None:
        # gthread's loop turns accepting back on whenever it is below worker_connections.
        super().set_accept_enabled(enabled and self._waiting_until is None)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._waiting_until is not None:
            left = self._waiting_until - time.monotonic()
            if left <= 0:
                self._waiting_until = None
                self._take_what_is_left()
            else:
                timeout = min(timeout, left)
        super().wait_for_and_dispatch_events(timeout)

    def _take_what_is_left(self) -> None:
        """The wait is over: a connection still queued is one no other worker took."""
        if self.alive and self.nr_conns < self.worker_connections:
            for listener in self.sockets:
                super().accept(listener)    # a non-blocking try: nothing queued, nothing done
            self.set_accept_enabled(self.nr_conns < self.worker_connections)
