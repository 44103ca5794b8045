"""The SQLite store's journal: pushes appended on the request path, moved into the inbox in
batches by ``SqliteStore.inbox_take``.

A SQLite commit costs the request path far more than the rest of a push (a write turn on the
file, several pages into the WAL, and every statement a GIL hand-off between the request
threads). A line copied into a file mapped ``MAP_SHARED`` is as durable against a process
crash as a WAL commit with ``synchronous=NORMAL``: both sit in the OS page cache. So the
request path copies the push, with its key, into its process's journal and answers; the
delivery process moves the files' new lines into the inbox in one transaction, dropping a
line whose key is already there (a retry), and stores how far it read in that same
transaction, so each line counts once. A copy into memory keeps the GIL, where a ``write()``
hands it to another request thread and waits to get it back, on every push.

Each file is allocated whole (``posix_fallocate``, so a full disk refuses a new file instead
of killing the writer at a page fault) and reads as zeros until written; a line never holds
a NUL byte (it is escaped), and each byte is written once. So the written part of a file ends
at its first NUL, and a line is whole once no NUL is left before its newline, whatever order
another process sees the bytes of a copy land in.

Each writing process appends to its own file in ``<db>-inbox/`` and holds an ``flock`` on it
while it lives. One process of the host reads every file: whichever holds the ``flock`` of
``reader.lock`` (usually the delivery process of ``wxpush serve``, which writes nothing), so
the request workers do no reading at all. A file whose lock nobody holds belongs to a writer
that died or moved on to a new file: the reader reads it to the end and deletes it.

A process keeps its own files: one that forks must not append in the child (gunicorn builds
the app in each worker, after the fork).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import fcntl
import logging
import mmap
import os
import re
import threading
import time
import uuid

from webhook.logsafe import Repeats
from webhook.store.base import InboxEntry
from webhook.store.files import private_directory, private_file

__all__ = ["Journal", "Chunk"]

log = logging.getLogger(__name__)
_repeats = Repeats()   # an unreadable line is logged, once per interval

SUFFIX = ".journal"
MAX_BYTES = 4 << 20    # the size of a file: a writer moves to a new one when it is full
READ_BYTES = 256 << 10  # at most this much of one file per read
SCAN_EVERY = 1.0       # seconds between looks for files whose writer is gone
UNNAMED_AGE = 60.0     # seconds after which a file never named is a dead writer's
READER_LOCK = "reader.lock"


@dataclass(slots=True)
class Chunk:
    """Whole lines read from one file: ``entries`` (each with how long its key is kept) end
    at byte ``end``. ``final``: its writer is gone and this is the rest of the file, to delete
    once the chunk is committed."""

    name: str
    end: int
    entries: list[tuple[InboxEntry, float]] = field(default_factory=list)
    final: bool = False


# A line: received_at and the key's ttl (seconds, 6 decimals), key, appid, format, answer,
# payload, tab-separated; the key, the answer and the payload with backslash, newline, tab and
# NUL escaped (escaping bytes costs the request path far less than JSON).
_UNESCAPE = {b"\\\\": b"\\", b"\\n": b"\n", b"\\t": b"\t", b"\\0": b"\0"}
_ESCAPED = re.compile(rb"\\[\\nt0]")


def _escape(data: bytes) -> bytes:
    return (data.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\t", b"\\t")
            .replace(b"\0", b"\\0"))


def _unescape(data: bytes) -> bytes:
    return _ESCAPED.sub(lambda found: _UNESCAPE[found[0]], data) if b"\\" in data else data


def _encode(entry: InboxEntry, ttl: float) -> bytes:
    # Microseconds are all a time needs; ``%r`` (a float's shortest exact repr) costs a push
    # as much as the rest of its line.
    return b"%.6f\t%.6f\t%s\t%s\t%s\t%s\t%s\n" % (
        entry.received_at, ttl, _escape(entry.key.encode()), entry.appid.encode(),
        entry.format.encode(), _escape(entry.answer.encode()), _escape(entry.payload.encode()))


def _decode(line: bytes) -> tuple[InboxEntry, float]:
    received_at, ttl, key, appid, fmt, answer, payload = line.split(b"\t")
    return InboxEntry(key=_unescape(key).decode(), appid=appid.decode(), format=fmt.decode(),
                      payload=_unescape(payload).decode(), answer=_unescape(answer).decode(),
                      received_at=float(received_at)), float(ttl)


class Journal:
    """Appends of this process, and reads of every file in ``directory`` while this process
    holds the reader lock.

    ``offset(name)`` gives the committed read position of a file the first time the reader
    reads it (the store keeps it); afterwards this object tracks it.
    """

    def __init__(self, directory: str, *, offset: Callable[[str], int],
                 monotonic: Callable[[], float] = time.monotonic,
                 max_bytes: int = MAX_BYTES) -> None:
        self.directory = directory
        self._offset, self._monotonic, self._max_bytes = offset, monotonic, max_bytes
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._fd: int | None = None            # this process's file, flocked
        self._map: mmap.mmap | None = None     # ... mapped for writing
        self._name = ""
        self._size = 0                         # bytes of it written
        self._positions: dict[str, int] = {}   # name -> offset read and committed
        self._maps: dict[str, mmap.mmap] = {}  # name -> file mapped for reading
        self._held: dict[str, int] = {}        # files whose writer is gone -> their flocked fd
        self._reader: int | None = None        # the reader lock, flocked, once taken
        self._next_scan = 0.0
        private_directory(directory)

    # -- request path -----------------------------------------------------------------------
    def append(self, entry: InboxEntry, ttl: float) -> None:
        """One line, copied into the mapped file; raises OSError if no file can hold it."""
        line = _encode(entry, ttl)
        with self._write_lock:
            end = self._size + len(line)
            if self._map is None or end > len(self._map):
                self._open(len(line))
                end = len(line)
            self._map[self._size:end] = line
            self._size = end

    def _close_own(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._fd is not None:
            os.close(self._fd)   # its lock goes with it: the file is read to the end elsewhere
        self._fd, self._map, self._name = None, None, ""

    def _open(self, need: int) -> None:
        """A new file of at least ``need`` bytes, allocated and locked before it gets its name,
        so no reader takes it for orphaned."""
        self._close_own()
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        temporary = os.path.join(self.directory, name + ".new")
        size = max(self._max_bytes, need)
        fd = private_file(temporary)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.posix_fallocate(fd, 0, size)   # ENOSPC here, not SIGBUS at a later page fault
            mapped = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        os.rename(temporary, os.path.join(self.directory, name))
        self._fd, self._map, self._name, self._size = fd, mapped, name, 0

    # -- background -------------------------------------------------------------------------
    def read(self) -> list[Chunk]:
        """New whole lines of every file (up to ``READ_BYTES`` of each), if this process is
        the reader (else none)."""
        with self._write_lock:
            own = self._name
        with self._read_lock:
            if not self._reading():
                return []
            if self._monotonic() >= self._next_scan:
                self._next_scan = self._monotonic() + SCAN_EVERY
                self._take_orphans(own)
            chunks = []
            for name in sorted(os.listdir(self.directory)):
                if not name.endswith(SUFFIX):
                    continue
                chunk = self._read_file(name, final=name in self._held)
                if chunk is not None:
                    chunks.append(chunk)
            return chunks

    def done(self, chunks: list[Chunk]) -> None:
        """``chunks`` are committed: advance past them, delete the files read to the end."""
        with self._read_lock:
            for chunk in chunks:
                self._positions[chunk.name] = chunk.end
                if chunk.final:
                    self._release(chunk.name, delete=True)

    def backlog(self) -> tuple[int, float | None]:
        """Pushes (whole lines) appended to any file but not yet taken, counted from the
        committed read positions, and the receive time of the oldest of them (None: none
        waits); any process may ask."""
        count, oldest = 0, None
        for name in os.listdir(self.directory):
            if not name.endswith(SUFFIX):
                continue
            try:
                mapped = _map_for_reading(os.path.join(self.directory, name))
            except FileNotFoundError:   # read to the end and deleted meanwhile
                continue
            if mapped is not None:
                with mapped:
                    position = self._offset(name)
                    lines = mapped[position:_written(mapped, position)].count(b"\n")
                    count += lines
                    first = _received_at(mapped, position) if lines else None
                    if first is not None and (oldest is None or first < oldest):
                        oldest = first
        return count, oldest

    def close(self) -> None:
        with self._read_lock, self._write_lock:
            self._close_own()
            for name in list(self._held):
                self._release(name, delete=False)
            for mapped in self._maps.values():
                mapped.close()
            self._maps = {}
            if self._reader is not None:
                os.close(self._reader)   # another process may read now
                self._reader = None

    def _reading(self) -> bool:
        """Whether this process holds the reader lock, taking it if it is free. Read
        positions are loaded afresh from the store whenever it is taken."""
        if self._reader is not None:
            return True
        fd = private_file(os.path.join(self.directory, READER_LOCK))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._reader, self._positions = fd, {}
        return True

    def _take_orphans(self, own: str) -> None:
        for name in sorted(os.listdir(self.directory)):
            # A writer that died between creating and naming its file left it unnamed. (A
            # young one may be a writer about to lock it.)
            unnamed = name.endswith(SUFFIX + ".new")
            if not (name.endswith(SUFFIX) or unnamed) or name in self._held or name == own:
                continue
            path = os.path.join(self.directory, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:   # named by its writer meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:             # its writer holds it
                os.close(fd)
                continue
            if unnamed or not os.path.exists(path):
                if unnamed and os.fstat(fd).st_mtime < time.time() - UNNAMED_AGE:
                    os.unlink(path)
                os.close(fd)            # (or deleted between our open and our lock)
                continue
            self._held[name] = fd

    def _read_file(self, name: str, *, final: bool) -> Chunk | None:
        position = self._positions.get(name)
        if position is None:
            position = self._positions[name] = self._offset(name)
        path = os.path.join(self.directory, name)
        mapped = self._maps.get(name)    # a file never grows once named: mapped once
        if mapped is None:
            try:
                mapped = _map_for_reading(path)
            except FileNotFoundError:
                self._release(name, delete=False)
                return None
            if mapped is None:        # empty: nothing was ever written to it
                return Chunk(name, 0, final=True) if final else None
            self._maps[name] = mapped
        end = _written(mapped, position)
        if end == position and not final:
            return None               # a live file with nothing new: the usual case
        # Whole lines up to READ_BYTES, or the one line that is longer.
        whole = mapped.rfind(b"\n", position, min(end, position + READ_BYTES)) + 1 \
            or mapped.find(b"\n", position, end) + 1
        if not whole:
            # Nothing whole yet; a gone writer's file ends here (in a line torn by its death).
            return Chunk(name, position, final=True) if final else None
        entries = []
        # Split at newlines alone: a payload keeps its \r (splitlines would cut a message
        # typed with a line break into pieces that are not lines, and drop them).
        start = position
        for line in mapped[position:whole - 1].split(b"\n"):
            try:
                entries.append(_decode(line))
            except ValueError:   # not a line this journal writes
                _repeats.log(log, logging.ERROR, "unreadable line", "journal line unreadable, "
                             "skipped file=%s offset=%d bytes=%d", name, start, len(line))
            start += len(line) + 1
        return Chunk(name, whole, entries,
                     final=final and mapped.find(b"\n", whole, end) < 0)

    def _release(self, name: str, *, delete: bool) -> None:
        fd = self._held.pop(name, None)
        mapped = self._maps.pop(name, None)
        if mapped is not None:
            mapped.close()
        if delete:
            try:
                os.unlink(os.path.join(self.directory, name))
            except FileNotFoundError:
                pass
        if fd is not None:
            os.close(fd)
        self._positions.pop(name, None)


def _map_for_reading(path: str) -> mmap.mmap | None:
    """The file mapped read-only (None if it is empty); FileNotFoundError if it is gone."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
    finally:
        os.close(fd)


def _received_at(mapped: mmap.mmap, position: int) -> float | None:
    """The receive time the line at ``position`` starts with (None if it does not read)."""
    tab = mapped.find(b"\t", position, position + 32)
    try:
        return float(mapped[position:tab]) if tab > 0 else None
    except ValueError:
        return None


def _written(mapped: mmap.mmap, position: int) -> int:
    """Where the written part of a file ends: at its first NUL from ``position`` on."""
    end = mapped.find(b"\0", position)
    return len(mapped) if end < 0 else end
