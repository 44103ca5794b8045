"""LiveRouter: the current Router, rebuilt when the rules file changes, in every worker process.

Each process polls the file's stat (mtime, size, inode) from a daemon thread; a change loads a
new router off the request path and swaps it in with one assignment, so there is never a gap.
A bad edit keeps the previous router and logs one line naming file:line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from webhook.backoff import Loop
from webhook.errors import ConfigError
from webhook.routing.router import Router

__all__ = ["LiveRouter"]

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int] | None


def _stamp(path: str) -> Stamp:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_size, found.st_ino)


class LiveRouter:
    """Holds ``load()``'s router; ``check()`` reloads it when ``path`` changed.

    The first load happens here and its errors propagate (a bad file stops the start).
    ``loaded_at`` (``clock`` time) is when the router in force was loaded; ``error`` why the
    last reload failed (None once one succeeds), as the console shows them.
    """

    def __init__(self, load: Callable[[], Router], path: str | None, *, interval: float = 1.0,
                 logger: logging.Logger = log, clock: Callable[[], float] = time.time) -> None:
        self._load, self.path, self._interval, self._log = load, path, interval, logger
        self._clock = clock
        self._stamp = _stamp(path) if path else None  # taken before loading: no edit is missed
        self.current = self._build()   # the router to use now
        self.loaded_at, self.error = clock(), None
        self.failed = False   # the file's last edit was refused: the previous rules serve
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _build(self) -> Router:
        router = self._load()
        router.compile()  # build the index now, not on the first request
        return router

    def check(self) -> bool:
        """Reload if the file changed since the last look; True if a new router is in place."""
        if self.path is None:
            return False
        with self._lock:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            self.failed = True
            if stamp is None:
                self.error = "file missing"
                self._log.error("rules reload failed file=%s: file missing; keeping the previous "
                                "rules", self.path)
                return False
            try:
                router = self._build()
            except ConfigError as exc:
                self.error = str(exc)
                self._log.error("rules reload failed, keeping the previous rules: %s", exc)
                return False
            except Exception as exc:  # a bug in a loader must not take routing down
                self.error = f"{type(exc).__name__} while loading"
                self._log.error("rules reload failed file=%s error=%s; keeping the previous rules",
                                self.path, type(exc).__name__, exc_info=exc)
                return False
            self.current, self.failed = router, False
            self.loaded_at, self.error = self._clock(), None
            self._log.info("rules reloaded file=%s rules=%d", self.path, len(router.rules))
            return True

    def start(self) -> None:
        """Poll in a daemon thread (no-op without a file, or once started)."""
        if self.path is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="wxpush-rules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=self._interval + 1)
        self._thread = None

    def _poll(self) -> None:
        def step() -> float:
            self.check()
            return self._interval
        Loop("rules reload", step, stop=self._stop, base=self._interval,
             cap=max(self._interval, 60.0), logger=self._log).run()
