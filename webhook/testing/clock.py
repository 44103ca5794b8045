"""A fake clock for tests: a callable returning unix seconds that only moves when told."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """``clock()`` / ``clock.now`` read the time; ``clock.advance(s)`` moves it forward."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now
