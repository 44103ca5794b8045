"""How the SQLite store writes: in groups, each in this host's write turn, never waiting past
the store's timeout, with the WAL checkpointed after the turn.

The writes of one process commit in groups: whichever thread finds no commit under way runs
every write queued so far in one transaction. A commit costs far more than an insert, and
under load the request threads, handlers and senders of a process write at once. Processes
take turns on an ``flock`` of ``<file>-wxpush.lock`` before ``BEGIN IMMEDIATE``, tried every
0.1 to 2 ms while another holds it (SQLite's busy handler sleeps 1, 2, 5, 10… ms), and every
wait, for the turn or in SQLite, ends with StoreError after ``timeout`` seconds: a process
frozen while it holds the turn (SIGSTOP, a stalled disk) must not freeze the request threads
of every other. (A blocking flock would hand the turn over sooner, but Linux gives it no
timeout; the request path does not take the turn for a push, and paired bench runs of
``wxpush serve``'s two delivery processes, the steady writers, show no gain from it.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
import fcntl
import os
import sqlite3
import threading
import time
from typing import Any, TypeVar

from webhook.errors import StoreError
from webhook.store.files import private_file

__all__ = ["Writes", "Write", "busy", "CHECKPOINT_EVERY", "WAL_LIMIT"]

NAP_FIRST, NAP_MOST = 0.0001, 0.002   # seconds between tries of a write turn another holds
CHECKPOINT_EVERY = 256   # commits of one process between its WAL checkpoints
WAL_LIMIT = 64 << 20     # bytes of WAL past which a checkpoint empties it (_checkpoint)
TRUNCATE_WAIT_MS = 20    # ... if the readers of the moment are done by then; else next time

T = TypeVar("T")
Write = Callable[[sqlite3.Connection, float], T]   # runs inside a transaction, at store time


def busy(conn: sqlite3.Connection, seconds: float) -> None:
    """How long SQLite's own waits (a lock of the file, a checkpoint) may last."""
    conn.execute(f"PRAGMA busy_timeout={max(1, round(seconds * 1000))}")


class _Pending:
    """One queued write and, once its group committed, its result or error. ``deadline``
    (``time.monotonic``): when its caller stops waiting."""

    __slots__ = ("fn", "deadline", "done", "result", "error")

    def __init__(self, fn: Write[Any], deadline: float) -> None:
        self.fn, self.deadline = fn, deadline
        self.done, self.result, self.error = False, None, None


class Writes:
    """The writes of one store object to the file at ``path``, on the connection
    ``connection()`` gives the calling thread, at the time ``clock()`` gives."""

    def __init__(self, path: str, *,
                 connection: Callable[[], AbstractContextManager[sqlite3.Connection]],
                 clock: Callable[[], float], timeout: float, wal_limit: int = WAL_LIMIT) -> None:
        self.path, self._connection, self._clock = path, connection, clock
        self.timeout, self._wal_limit = timeout, wal_limit
        self._queue: deque[_Pending] = deque()
        self._committing = threading.Lock()
        self._lock_path = f"{path}-wxpush.lock"
        self._lock_fd: int | None = None
        self._commits = 0

    def write(self, fn: Write[T]) -> T:
        """``fn(conn, now)`` inside a write transaction, committed before this returns, or
        StoreError once ``timeout`` has passed.

        Group commit: the write is queued, then the thread waits for the commit lock. If its
        write is not done by then, it leads: it runs every queued write in one transaction,
        each in a savepoint so a failing one rolls back alone, and commits once. A leader
        gives up when the oldest write of its group runs out of time, so no write waits past
        its own deadline for a turn that a frozen process holds.
        """
        pending = _Pending(fn, time.monotonic() + self.timeout)
        self._queue.append(pending)
        checkpoint = False
        if not self._committing.acquire(timeout=self.timeout):
            try:   # the leader waits for a turn another process holds
                self._queue.remove(pending)
            except ValueError:   # ... and took this write just now: it ends by its deadline
                self._committing.acquire()
            else:
                raise self._busy_error()
        try:
            if not pending.done:
                batch = []
                while self._queue:
                    batch.append(self._queue.popleft())
                self._commit(batch)
                self._commits += 1
                checkpoint = self._commits % CHECKPOINT_EVERY == 0
        finally:
            self._committing.release()
        if checkpoint:
            self._checkpoint()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def close(self) -> None:
        """Let go of the lock file's descriptor."""
        if self._lock_fd is not None:
            with self._committing:
                os.close(self._lock_fd)
                self._lock_fd = None

    def error(self, exc: BaseException) -> Exception:
        """What a caller of ``write`` gets for ``exc``."""
        if isinstance(exc, (sqlite3.Error, OSError)):
            return StoreError(f"sqlite store {self.path}: {exc}")
        return exc if isinstance(exc, Exception) else StoreError(f"write interrupted: {exc!r}")

    def _busy_error(self) -> StoreError:
        return StoreError(f"sqlite store {self.path}: no write turn within {self.timeout:g} s "
                          "(another process holds the store's lock)")

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file, and keep the WAL from growing without end.

        PASSIVE copies what no reader still needs and never blocks a writer. But under steady
        load some reader always needs the newest frames, so the WAL never starts over from
        its beginning and grows by every write, to many times the database's size, and keeps
        that size when the load is gone. Past ``wal_limit``
        bytes, TRUNCATE waits for the readers of the moment (each read here is one short
        statement), copies it all and empties the file. Writers wait meanwhile, so it gives
        up after ``TRUNCATE_WAIT_MS`` and tries again at the next checkpoint; they are
        background writers only (the request path appends to the journal).
        """
        try:
            large = os.path.getsize(f"{self.path}-wal") > self._wal_limit
            with self._connection() as conn:
                if not large:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    return
                busy(conn, TRUNCATE_WAIT_MS / 1000)
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    busy(conn, self.timeout)
        except (StoreError, OSError):
            pass   # the write itself committed; the next checkpoint catches up

    @contextmanager
    def _host_lock(self, deadline: float) -> Iterator[bool]:
        """This host's write turn: an exclusive ``flock``, held by one process at a time;
        whether it had to wait for it. StoreError at ``deadline`` (``time.monotonic``): a
        process stopped while it holds the turn must not stop every other with it. Linux
        has no flock with a timeout, so a turn another holds is tried again after a nap."""
        if self._lock_fd is None:
            self._lock_fd = private_file(self._lock_path)
        nap, waited = NAP_FIRST, False
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._busy_error() from None
                time.sleep(min(nap, left))
                nap, waited = min(nap * 2, NAP_MOST), True
        try:
            yield waited
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _commit(self, batch: list[_Pending]) -> None:
        deadline = min(pending.deadline for pending in batch)
        try:
            with self._host_lock(deadline) as waited, self._connection() as conn:
                if waited:   # SQLite's own waits get what is left of the deadline
                    busy(conn, deadline - time.monotonic())
                try:
                    self._transaction(conn, batch)
                finally:
                    if waited:
                        busy(conn, self.timeout)
        except BaseException as exc:   # nothing of the batch committed
            error = self.error(exc)
            for pending in batch:
                pending.error = pending.error or error
                pending.result = None
        finally:
            for pending in batch:
                pending.done = True

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        now = self._clock()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if len(batch) == 1:
                batch[0].result = batch[0].fn(conn, now)
            else:
                for pending in batch:
                    conn.execute("SAVEPOINT one")
                    try:
                        pending.result = pending.fn(conn, now)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO one")
                        pending.error = self.error(exc)
                    conn.execute("RELEASE one")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
