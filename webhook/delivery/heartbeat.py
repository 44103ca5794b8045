"""The delivery process's heartbeat: how ``wxpush serve``'s supervisor tells a delivery process
that goes round its loops from one that is stopped or stuck (on a lock, a disk), and how the
request workers learn it (``BeatFile``) for ``/readyz``."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["Heartbeat", "BeatFile"]


class Heartbeat:
    """The delivery side of ``stall``: each of the ``watch``-ed loops calls ``beat(loop)`` as
    it goes round, and once every one of them has since the last sign (and ``every`` seconds
    have passed) there is a sign: ``last`` is its time, and one byte goes down the
    supervisor's pipe (``fd``; None: no supervisor, as in a request worker that delivers).
    A loop that hangs withholds the sign, whatever the process's other threads do."""

    def __init__(self, fd: int | None, *, every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fd, self._every, self._clock = fd, every, clock
        if fd is not None:
            os.set_blocking(fd, False)   # a loop never waits on its supervisor
        self._lock = threading.Lock()
        self._loops: frozenset[str] = frozenset()
        self._waiting: set[str] = set()   # loops not heard from since the last sign
        self._next = 0.0
        self.last: float | None = None    # when every loop last went round (``clock``)

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
            self._waiting, self._next, self.last = set(self._loops), now + self._every, now
        if self._fd is None:
            return
        try:
            os.write(self._fd, b".")
        except (BlockingIOError, BrokenPipeError):   # a full pipe says enough; no supervisor
            pass


class BeatFile:
    """The supervisor's word on its delivery processes, for the request workers: each one's
    pid and the time of its last sign (each gives one a second at most), in one small file
    replaced whole, so a reader never sees half of it."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        self.path, self._clock = path, clock
        self._signs: dict[int, float] = {}   # pid -> its last sign

    def note(self, pid: int) -> None:
        """The delivery process ``pid`` gave a sign of progress now."""
        self._signs[pid] = self._clock()
        self._write()

    def forget(self, pid: int) -> None:
        """The delivery process ``pid`` is gone: its silence is no one's concern."""
        if self._signs.pop(pid, None) is not None:
            self._write()

    def _write(self) -> None:
        fresh = f"{self.path}.{os.getpid()}"
        with open(fresh, "w", encoding="ascii") as file:
            json.dump({str(pid): at for pid, at in self._signs.items()}, file)
        os.replace(fresh, self.path)

    def last(self) -> tuple[int, float] | None:
        """(pid, seconds since its last sign) of the delivery process silent longest, or
        None before the first sign."""
        try:
            with open(self.path, encoding="ascii") as file:
                signs = {int(pid): float(at) for pid, at in json.load(file).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return None
        if not signs:
            return None
        pid, at = min(signs.items(), key=lambda sign: sign[1])
        return pid, max(0.0, self._clock() - at)
