"""Log lines that outside input cannot forge or flood.

``shown(value)`` is how any value that came from a request (a path, a query value, a header,
a field of a push) enters a log line: escaped the way ``repr`` escapes a string (no newline,
carriage return, escape or NUL reaches the log as itself, nor half a surrogate pair) and cut
to a length. ``Repeats`` lets the first line of a kind through and then one line per
interval carrying how many were held back, so 20,000 bad requests, or a background loop
failing 100 times a second, write a few lines rather than megabytes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["shown", "Repeats", "LIMIT"]

LIMIT = 80   # characters of one value shown in a log line


def shown(value: object, limit: int = LIMIT) -> str:
    """``value`` as text safe for one log line: printable characters as they are, everything
    else escaped (``\\n``, ``\\x1b``, ``\\ud800``), quotes left alone, at most ``limit``
    characters of it followed by how many more there were."""
    text = value if isinstance(value, str) else str(value)
    cut = text[:limit]
    if not cut.isprintable() or "\\" in cut:
        cut = "".join(_readable(ch) for ch in cut)
    if len(text) > limit:
        cut += f"...(+{len(text) - limit})"
    return cut


def _readable(ch: str) -> str:
    """One character: a backslash doubled (so an escape cannot be faked), a printable one as
    it is (Chinese stays readable), any other as Python writes it in a string literal."""
    if ch == "\\":
        return "\\\\"
    if ch.isprintable():
        return ch
    return ch.encode("unicode_escape", "backslashreplace").decode("ascii")


class Repeats:
    """One log line per ``interval`` seconds for each kind of event, with a count.

    ``log(logger, level, kind, msg, *args)`` writes the first line of ``kind`` at once; later
    ones within ``interval`` are counted, and the next line written says how many were held
    back (``repeated=N``). Kinds are whatever the caller groups by (a rejection's reason, a
    background loop's name); at most ``max_kinds`` are tracked, the oldest dropped first.
    """

    def __init__(self, interval: float = 10.0, *, clock: Callable[[], float] = time.monotonic,
                 max_kinds: int = 1024) -> None:
        self.interval, self._clock, self._max_kinds = interval, clock, max_kinds
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}   # kind -> (last written, held back)

    def log(self, logger: logging.Logger, level: int, kind: str, msg: str, *args: object,
            exc_info: BaseException | bool | None = None) -> None:
        """Write the line unless one of ``kind`` went out less than ``interval`` ago."""
        if not logger.isEnabledFor(level):
            return
        held = self.admit(kind)
        if held is None:
            return
        if held:
            msg, args = msg + " repeated=%d", (*args, held)
        logger.log(level, msg, *args, exc_info=exc_info, stacklevel=2)

    def admit(self, kind: str) -> int | None:
        """None if a line of ``kind`` went out less than ``interval`` ago (this one is
        counted); otherwise how many were held back since, and this one goes out. For a
        logging filter, which rewrites the record it lets through."""
        now = self._clock()
        with self._lock:
            last, held = self._kinds.get(kind, (None, 0))
            if last is not None and now - last < self.interval:
                self._kinds[kind] = (last, held + 1)
                return None
            self._kinds.pop(kind, None)
            if len(self._kinds) >= self._max_kinds:
                del self._kinds[next(iter(self._kinds))]
            self._kinds[kind] = (now, 0)
        return held
