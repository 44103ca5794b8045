"""The delivery process's heartbeat: how ``wxpush serve``'s supervisor tells a delivery process
that goes round its loops from one that is stopped or stuck (on a lock, a disk)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["Heartbeat"]


class Heartbeat:
    """The delivery process's side of ``stall``: each of the ``watch``-ed loops calls
    ``beat(loop)`` as it goes round, and once every one of them has since the last sign (and
    ``every`` seconds have passed) one byte goes down the supervisor's pipe. A loop that
    hangs withholds the sign, whatever the process's other threads do."""

    def __init__(self, fd: int, *, every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fd, self._every, self._clock = fd, every, clock
        os.set_blocking(fd, False)   # a loop never waits on its supervisor
        self._lock = threading.Lock()
        self._loops: frozenset[str] = frozenset()
        self._waiting: set[str] = set()   # loops not heard from since the last sign
        self._next = 0.0

    def watch(self, loops: Iterable[str]) -> None:
        with self._lock:
            self._loops = frozenset(loops)
            self._waiting = set(self._loops)

    def beat(self, loop: str) -> None:
        with self._lock:
            self._waiting.discard(loop)
            now = self._clock()
            if self._waiting or now < self._next or not self._loops:
                return
            self._waiting, self._next = set(self._loops), now + self._every
        try:
            os.write(self._fd, b".")
        except (BlockingIOError, BrokenPipeError):   # a full pipe says enough; no supervisor
            pass
