"""How many replies are sent at once: as many as WeChat's latency calls for, fewer while it
asks us to back off.

A send spends nearly all its time waiting for WeChat's answer (20-300 ms), so replies go out
at about ``sends in flight / latency``: the delivery process keeps up to ``limit`` sends in
flight, each on a thread of its own while it waits. The limit starts at the cap (``[server]
senders``) and follows WeChat's answers as TCP's congestion window follows losses: halved when
a send is answered with a passing error (busy, throttled, timed out, 5xx) and grown back by one
with each success. A burst of failures answered together halves it once: a failure counts
only if its send started after the last cut.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["InFlight"]


class InFlight:
    """The count of sends in flight and the limit they keep under (between 1 and ``cap``)."""

    def __init__(self, cap: int, *, timer: Callable[[], float] = time.monotonic) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap, self._timer = cap, timer
        self._limit = float(cap)
        self._count = 0
        self._cut_at = -float("inf")   # when the limit was last halved (``timer``)
        self._changed = threading.Condition()

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def count(self) -> int:
        return self._count

    def free(self) -> int:
        """Sends that may start now."""
        return max(0, int(self._limit) - self._count)

    def wait_free(self, seconds: float) -> int:
        """Wait up to ``seconds`` for a send to end while none may start; ``free()``."""
        with self._changed:
            self._changed.wait_for(self.free, seconds)
            return self.free()

    def wait_idle(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for every send in flight to end; whether they did."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, seconds)

    def start(self) -> float:
        """A send starts (the caller saw ``free()``); its start time, for ``end``."""
        with self._changed:
            self._count += 1
        return self._timer()

    def end(self, started: float, *, backed_off: bool) -> None:
        """A send that started at ``started`` ended; ``backed_off``: WeChat asked us to back
        off (a passing error), else it answered (sent, or refused for good)."""
        with self._changed:
            self._count -= 1
            if not backed_off:
                self._limit = min(float(self.cap), self._limit + 1.0)
            elif started >= self._cut_at:
                self._limit = max(1.0, self._limit / 2)
                self._cut_at = self._timer()
            self._changed.notify_all()
