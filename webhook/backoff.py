"""Trying again: one backoff formula for everything wxpush retries (a send, a token fetch, a
push whose handling failed, a background loop whose step failed), and the loop that every
background thread runs, which backs off while its step keeps failing."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from webhook.logsafe import Repeats, shown

__all__ = ["backoff", "Loop"]

log = logging.getLogger(__name__)


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failure ``attempt`` (0 for the first): ``base`` doubled for each
    one, at most ``cap``; with ``rng``, a random share of that between half and all of it, so
    that processes which failed together do not all come back together."""
    delay = min(cap, base * 2.0 ** min(attempt, 64))
    return delay if rng is None else delay * (0.5 + rng.random() / 2)


class Loop:
    """One background loop: ``step()`` runs until ``stop`` is set and returns how many seconds
    to ``wait`` before it runs again (0: at once).

    A step that raises runs again after ``backoff`` (``base`` doubled for each failure in a
    row, at most ``cap``; a success starts over), so a loop whose store is failing does not
    spin. Its error is logged through ``repeats`` (one line per interval, with a count of
    those held back), with the traceback on the first failure of a run. ``beat()`` is called
    after every step, failed or not: it tells a supervisor the loop goes round.
    """

    def __init__(self, name: str, step: Callable[[], float], *, stop: threading.Event,
                 wait: Callable[[float], object] | None = None, base: float = 0.05,
                 cap: float = 10.0, repeats: Repeats | None = None,
                 beat: Callable[[], None] | None = None,
                 logger: logging.Logger = log) -> None:
        self.name, self._step, self._stop = name, step, stop
        self._wait = wait or stop.wait
        self._base, self._cap = base, cap
        self._repeats = repeats or Repeats()
        self._beat, self._log = beat, logger
        self.failures = 0   # in a row, now

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                pause = self._step()
                self.failures = 0
            except Exception as exc:
                self.failures += 1
                pause = backoff(self.failures - 1, base=self._base, cap=self._cap)
                self._repeats.log(self._log, logging.ERROR, self.name,
                                  "%s failed error=%s: %s; failures=%d, next try in %.2f s",
                                  self.name, type(exc).__name__, shown(exc, 200), self.failures,
                                  pause, exc_info=exc if self.failures == 1 else None)
            if self._beat is not None:
                self._beat()
            if pause > 0:   # after a failure, a wait only ``stop`` cuts short
                (self._stop.wait if self.failures else self._wait)(pause)
