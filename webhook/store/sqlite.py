"""The SQLite store: one file in WAL mode, shared by every process of one host.

Each thread has its own connection. Every write runs inside ``BEGIN IMMEDIATE``, in groups,
in this host's write turn, and no write or read waits past the store's ``timeout``
(``webhook.store.sqlite_writes``). A push is recorded by an append to this process's journal
(``webhook.store.journal``), not by a commit; ``inbox_take`` moves the journals' new lines
into the inbox before it takes what is due.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
import os
import sqlite3
import threading
import time
from typing import TypeVar

from webhook.errors import StoreError
from webhook.store.base import (DID_NOT_FINISH, INBOX_STATES, OUTBOX_STATES, WAIT, Backlog,
                                InboxEntry, NewReply, OutboxRow, Store, ValueUpdate, log_duplicate)
from webhook.store.files import narrow, private_file
from webhook.store.journal import Journal
from webhook.store.sqlite_history import HISTORY_SCHEMA, SqliteHistory
from webhook.store.sqlite_writes import WAL_LIMIT, Write, Writes, busy

__all__ = ["SqliteStore", "SCHEMA_VERSION"]

SWEEP_INTERVAL = 60.0   # seconds of store clock between sweeps of expired values / inbox keys
SWEEP_BATCH = 500
JOURNAL_POLL = 0.005    # seconds between looks at the journals while ``inbox_take`` waits
READ_FILE_TTL = 86400.0  # seconds a journal file's read offset outlives the file's end

# An outbox row is "unfinished" while pending or sending. For a sending row, next_at holds
# its lease expiry: either way a row is due when next_at <= now. is_head marks each user's
# oldest unfinished row, the only one that may be claimed; outbox_heads finds the due ones
# without scanning a backlog.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    key TEXT PRIMARY KEY, appid TEXT NOT NULL, format TEXT NOT NULL, payload TEXT NOT NULL,
    answer TEXT NOT NULL, received_at REAL NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL, owner TEXT, lease_until REAL, expires_at REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS inbox_lease ON inbox (lease_until) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS inbox_expiry ON inbox (expires_at);
CREATE INDEX IF NOT EXISTS inbox_dead ON inbox (received_at) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, appid TEXT NOT NULL, openid TEXT NOT NULL,
    body TEXT NOT NULL, rule TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    next_at REAL NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    errcode INTEGER, errmsg TEXT, owner TEXT, is_head INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_heads ON outbox (next_at) WHERE is_head = 1;
CREATE INDEX IF NOT EXISTS outbox_user ON outbox (appid, openid, id)
    WHERE state IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, id);
CREATE INDEX IF NOT EXISTS outbox_finished ON outbox (updated_at) WHERE state IN ('sent', 'dead');
"""

_USER_UNFINISHED = "appid = ? AND openid = ? AND state IN ('pending', 'sending')"
_INBOX_COLS = "key, appid, format, payload, answer, received_at, state, attempts, error"
# A dead entry is kept until purged: it never expires, and a retry of its push stays a duplicate.
_NEVER = float("inf")
_RECORDED = "key = ? AND (state = 'dead' OR expires_at > ?)"
# Pending entries due to be taken: new, or their lease ran out.
_DUE = "state = 'pending' AND lease_until <= ? AND expires_at > ?"
_OUTBOX_COLS = ("id, appid, openid, body, rule, state, attempts, next_at, created_at, "
                "updated_at, errcode, errmsg")


T = TypeVar("T")


# The schema's version, kept in the file (PRAGMA user_version): 0 is a file made before
# versions were kept. Each start brings an older file up to date, one step at a time, and
# refuses a newer one: its tables may mean what this code does not know.
SCHEMA_VERSION = 1


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise StoreError(f"sqlite store {path} has schema version {found}, newer than this "
                         f"wxpush's {SCHEMA_VERSION}: run the wxpush that wrote it, or a newer one")
    conn.executescript(_SCHEMA + HISTORY_SCHEMA)   # (the console's tables: only ever added)
    if found < 1:
        _add_error_column(conn)
    if found < SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _add_error_column(conn: sqlite3.Connection) -> None:
    """A database made before the inbox kept errors gets the column (once: a process
    opening it at the same moment may have added it first)."""
    if "error" in {row[1] for row in conn.execute("PRAGMA table_info(inbox)")}:
        return
    try:
        conn.execute("ALTER TABLE inbox ADD COLUMN error TEXT")
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):
            raise


def _outbox_row(row: tuple) -> OutboxRow:
    return OutboxRow(str(row[0]), *row[1:])


class SqliteStore(SqliteHistory, Store):
    """``Store`` over one SQLite file, ``path``."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time,
                 timeout: float = WAIT, wal_limit: int = WAL_LIMIT) -> None:
        self.path = path
        self.clock = clock
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._conn_lock = threading.RLock()
        self._next_sweep = 0.0
        self._writes = Writes(path, connection=self._connection, clock=lambda: self.clock(),
                              timeout=timeout, wal_limit=wal_limit)
        try:
            self._make_files()
            with self._connection() as conn:
                conn.execute("PRAGMA journal_mode=WAL")   # persistent in the file
                _migrate(conn, path)
            self._journal = Journal(f"{path}-inbox", offset=lambda name: int(
                self.get(f"journal:{name}") or 0))
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open sqlite store {path}: {exc}") from exc

    def _make_files(self) -> None:
        """The database and the lock file, 0600 before SQLite opens the database (it gives
        its -wal and -shm the database's mode); any of the store's files found open to other
        users is narrowed."""
        inbox = f"{self.path}-inbox"
        try:
            journals = [os.path.join(inbox, name) for name in os.listdir(inbox)]
        except FileNotFoundError:
            journals = []
        narrow([self.path, f"{self.path}-wal", f"{self.path}-shm", f"{self.path}-journal",
                f"{self.path}-wxpush.lock", inbox, *journals])
        for path in (self.path, f"{self.path}-wxpush.lock"):
            os.close(private_file(path))

    @classmethod
    def from_url(cls, url: str, *, clock: Callable[[], float] = time.time,
                 timeout: float = WAIT) -> SqliteStore:
        """``sqlite:///relative.db`` or ``sqlite:////absolute.db``: a file, which the request
        workers and the delivery process share (an in-memory database would be one process's)."""
        path = url[len("sqlite:///"):]
        if not url.startswith("sqlite:///") or path in ("", ":memory:"):
            raise StoreError(f"sqlite store URL must look like sqlite:///path.db, got {url}")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise StoreError(f"sqlite store {url}: directory {directory} does not exist")
        if not os.access(directory, os.W_OK):
            raise StoreError(f"sqlite store {url}: directory {directory} is not writable")
        return cls(path, clock=clock, timeout=timeout)

    # -- connections ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.timeout)
        busy(conn, self.timeout)
        # In WAL mode NORMAL loses no committed transaction when a process crashes (the
        # WAL is in the OS page cache); only a power loss can drop the last commits. We
        # promise durability against process crashes, so NORMAL is enough.
        conn.execute("PRAGMA synchronous=NORMAL")
        # SQLite would checkpoint inside COMMIT, while this host's write turn is held, and a
        # checkpoint waits on fsync; Writes runs them after the turn instead.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The process's one connection, to one thread at a time (StoreError after
        ``timeout``). One connection, not one a thread: SQLite drops a connection's page
        cache whenever another connection wrote, so the threads of a busy process would
        each read every page again."""
        if not self._conn_lock.acquire(timeout=self.timeout):
            raise StoreError(f"sqlite store {self.path}: busy for {self.timeout:g} s "
                             "(another thread of this process holds its connection)")
        try:
            if self._conn is None:
                self._conn = self._connect()
            yield self._conn
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc
        finally:
            self._conn_lock.release()

    def _write(self, fn: Write[T]) -> T:
        """``fn(conn, now)`` inside a write transaction, committed before this returns
        (``Writes.write``)."""
        return self._writes.write(fn)

    def _maybe_sweep(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete a batch of expired values and inbox keys, at most once a minute."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        conn.execute("DELETE FROM kv WHERE key IN (SELECT key FROM kv WHERE expires_at <= ? "
                     "LIMIT ?)", (now, SWEEP_BATCH))
        conn.execute("DELETE FROM inbox WHERE rowid IN (SELECT rowid FROM inbox "
                     "WHERE expires_at <= ? LIMIT ?)", (now, SWEEP_BATCH))

    def close(self) -> None:
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._writes.close()
        self._journal.close()

    # -- values ---------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ? AND "
                               "(expires_at IS NULL OR expires_at > ?)",
                               (key, self.clock())).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        self._write(lambda conn, now: conn.execute(
            "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
            (key, value, None if ttl is None else now + ttl)))

    def put_new(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        return self._write(lambda conn, now: conn.execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "expires_at = excluded.expires_at WHERE kv.expires_at <= ?",
            (key, value, None if ttl is None else now + ttl, now)).rowcount == 1)

    def delete(self, key: str) -> None:
        self._write(lambda conn, now: conn.execute("DELETE FROM kv WHERE key = ?", (key,)))

    def delete_if(self, key: str, expected: str) -> bool:
        return self._write(lambda conn, now: conn.execute(
            "DELETE FROM kv WHERE key = ? AND value = ? AND "
            "(expires_at IS NULL OR expires_at > ?)", (key, expected, now)).rowcount == 1)

    def update(self, key: str, fn: Callable[[str | None], str | None], *,
               ttl: float | None = None) -> str | None:
        def write(conn: sqlite3.Connection, now: float) -> str | None:
            new = self._apply(conn, now, ValueUpdate(key, fn, ttl))
            self._maybe_sweep(conn, now)
            return new
        return self._write(write)

    @staticmethod
    def _apply(conn: sqlite3.Connection, now: float, change: ValueUpdate) -> str | None:
        """``update`` inside a transaction the caller holds."""
        row = conn.execute("SELECT value FROM kv WHERE key = ? AND "
                           "(expires_at IS NULL OR expires_at > ?)", (change.key, now)).fetchone()
        new = change.fn(row[0] if row else None)
        if new is None:
            conn.execute("DELETE FROM kv WHERE key = ?", (change.key,))
        else:
            conn.execute("INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
                         (change.key, new, None if change.ttl is None else now + change.ttl))
        return new

    # -- lease lock -----------------------------------------------------------------------
    def acquire(self, name: str, owner: str, *, lease: float) -> bool:
        return self._write(lambda conn, now: conn.execute(
            "INSERT INTO locks (name, owner, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at "
            "WHERE locks.owner = excluded.owner OR locks.expires_at <= ?",
            (name, owner, now + lease, now)).rowcount == 1)

    def release(self, name: str, owner: str) -> bool:
        return self._write(lambda conn, now: conn.execute(
            "DELETE FROM locks WHERE name = ? AND owner = ? AND expires_at > ?",
            (name, owner, now)).rowcount == 1)

    # -- inbox ----------------------------------------------------------------------------
    def inbox_record(self, entry: InboxEntry, *, ttl: float) -> str | None:
        with self._connection() as conn:   # a read: WAL readers wait for no writer
            found = conn.execute(f"SELECT answer, state FROM inbox WHERE {_RECORDED}",
                                 (entry.key, self.clock())).fetchone()
        if found is not None:
            log_duplicate(entry, found[1])
            return found[0]
        # Not in the inbox yet. A retry that comes before its first delivery was taken from
        # the journal is not found either: the one case where an answer is made again (by the
        # rules of the moment); its line is dropped, with a log line, when it is taken.
        try:
            self._journal.append(entry, ttl)
        except OSError as exc:
            raise StoreError(f"sqlite store {self.path}: journal: {exc}") from exc
        return None

    def inbox_take(self, *, owner: str, lease: float, limit: int, max_attempts: int,
                   wait: float = 0.0) -> list[InboxEntry]:
        if lease <= 0:
            raise ValueError("lease must be positive")
        deadline = time.monotonic() + wait
        while True:
            taken = self._take(owner, lease, limit, max_attempts)
            left = deadline - time.monotonic()
            if taken or left <= 0:
                return taken
            time.sleep(min(JOURNAL_POLL, left))

    def _take(self, owner: str, lease: float, limit: int, max_attempts: int) -> list[InboxEntry]:
        """Move the journals' new lines into the inbox, then lease what is due, in one write;
        none when there is nothing to move and nothing due (found by a read)."""
        try:
            chunks = self._journal.read()
        except OSError as exc:
            raise StoreError(f"sqlite store {self.path}: journal: {exc}") from exc
        if not chunks:
            with self._connection() as conn:
                now = self.clock()
                if conn.execute(f"SELECT 1 FROM inbox WHERE {_DUE} LIMIT 1",
                                (now, now)).fetchone() is None:
                    return []
        due = f"SELECT key FROM inbox WHERE {_DUE} AND attempts {{}} ? ORDER BY lease_until LIMIT ?"

        def write(conn: sqlite3.Connection, now: float) -> list[tuple]:
            for chunk in chunks:
                for entry, ttl in chunk.entries:
                    self._insert(conn, entry, now + ttl, now)
                # Kept while the file may still be read; a finished file's row just expires.
                conn.execute("INSERT OR REPLACE INTO kv (key, value, expires_at) "
                             "VALUES (?, ?, ?)", (f"journal:{chunk.name}", str(chunk.end),
                                                  now + READ_FILE_TTL if chunk.final else None))
            dead = conn.execute(
                "UPDATE inbox SET state = 'dead', owner = NULL, lease_until = NULL, "
                f"expires_at = ?, error = ? WHERE key IN ({due.format('>=')}) "
                f"RETURNING {_INBOX_COLS}",
                (_NEVER, DID_NOT_FINISH, now, now, max_attempts, limit)).fetchall()
            return dead + conn.execute(
                "UPDATE inbox SET owner = ?, lease_until = ?, attempts = attempts + 1 "
                f"WHERE key IN ({due.format('<')}) RETURNING {_INBOX_COLS}",
                (owner, now + lease, now, now, max_attempts, limit)).fetchall()

        rows = self._write(write)
        self._journal.done(chunks)
        return sorted((InboxEntry(*r) for r in rows), key=lambda e: e.received_at)

    def _insert(self, conn: sqlite3.Connection, entry: InboxEntry, expires_at: float,
                now: float) -> None:
        """A new key, or one whose ttl ran out, as a pending entry due now; a key still
        recorded is a retry's, dropped with a log line."""
        cur = conn.execute(
            "INSERT INTO inbox (key, appid, format, payload, answer, received_at, state, "
            "attempts, owner, lease_until, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, NULL, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET appid = excluded.appid, "
            "format = excluded.format, payload = excluded.payload, "
            "answer = excluded.answer, received_at = excluded.received_at, "
            "state = 'pending', attempts = 0, owner = NULL, "
            "lease_until = excluded.lease_until, expires_at = excluded.expires_at, error = NULL "
            "WHERE inbox.expires_at <= ?",
            (entry.key, entry.appid, entry.format, entry.payload, entry.answer,
             entry.received_at, now, expires_at, now))
        if cur.rowcount == 1:
            self._maybe_sweep(conn, now)
        else:
            log_duplicate(entry, conn.execute("SELECT state FROM inbox WHERE key = ?",
                                              (entry.key,)).fetchone()[0])

    def inbox_retry(self, key: str, *, owner: str, next_at: float, error: str) -> bool:
        return self._write(lambda conn, now: conn.execute(
            "UPDATE inbox SET owner = NULL, lease_until = ?, error = ? "
            "WHERE key = ? AND owner = ? AND state = 'pending'",
            (next_at, error, key, owner)).rowcount == 1)

    def inbox_dead(self, key: str, *, owner: str, error: str) -> bool:
        return self._write(lambda conn, now: conn.execute(
            "UPDATE inbox SET state = 'dead', owner = NULL, lease_until = NULL, expires_at = ?, "
            "error = ? WHERE key = ? AND owner = ? AND state = 'pending'",
            (_NEVER, error, key, owner)).rowcount == 1)

    def inbox_stats(self) -> dict[str, int]:
        """Pending counts the pushes still in the journals too (retries among them)."""
        try:
            journaled = self._journal.backlog()[0]
        except OSError as exc:
            raise StoreError(f"sqlite store {self.path}: journal: {exc}") from exc
        with self._connection() as conn:
            pending = conn.execute("SELECT COUNT(*) FROM inbox WHERE state = 'pending' "
                                   "AND expires_at > ?", (self.clock(),)).fetchone()[0]
            dead = conn.execute("SELECT COUNT(*) FROM inbox WHERE state = 'dead'").fetchone()[0]
        return {"pending": pending + journaled, "dead": dead}

    def inbox_list(self, *, state: str | None = None, limit: int = 100) -> list[InboxEntry]:
        states = INBOX_STATES if state is None else (state,)
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_INBOX_COLS} FROM inbox WHERE state IN ({', '.join('?' * len(states))}) "
                "AND expires_at > ? ORDER BY received_at DESC LIMIT ?",
                (*states, self.clock(), limit)).fetchall()
        return [InboxEntry(*r) for r in rows]

    def inbox_requeue(self, keys: Sequence[str] | None = None, *, ttl: float) -> int:
        def write(conn: sqlite3.Connection, now: float) -> int:
            back = ("UPDATE inbox SET state = 'pending', attempts = 0, owner = NULL, "
                    "lease_until = ?, expires_at = ? WHERE state = 'dead'")
            if keys is None:
                return conn.execute(back, (now, now + ttl)).rowcount
            return sum(conn.execute(back + " AND key = ?", (now, now + ttl, key)).rowcount
                       for key in keys)
        return self._write(write)

    def inbox_purge(self, *, before: float) -> int:
        return self._write(lambda conn, now: conn.execute(
            "DELETE FROM inbox WHERE state = 'dead' AND received_at < ?", (before,)).rowcount)

    def inbox_renew(self, key: str, *, owner: str, lease: float) -> bool:
        return self._write(lambda conn, now: conn.execute(
            "UPDATE inbox SET lease_until = ? WHERE key = ? AND owner = ? AND state = 'pending'",
            (now + lease, key, owner)).rowcount == 1)

    def inbox_finish(self, key: str, replies: Sequence[NewReply], *, owner: str,
                     also: ValueUpdate | None = None) -> list[OutboxRow]:
        def write(conn: sqlite3.Connection, now: float) -> list[tuple]:
            if also is not None:
                self._apply(conn, now, also)
            cur = conn.execute("UPDATE inbox SET state = 'done', owner = NULL, lease_until = NULL "
                               "WHERE key = ? AND state = 'pending'", (key,))
            if cur.rowcount == 0:
                return []
            return self._enqueue(conn, now, replies)
        return [_outbox_row(r) for r in self._write(write)]

    @staticmethod
    def _enqueue(conn: sqlite3.Connection, now: float, replies: Sequence[NewReply]) -> list[tuple]:
        return [conn.execute(
            "INSERT INTO outbox (appid, openid, body, rule, state, attempts, next_at, "
            "created_at, updated_at, is_head) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, "
            f"NOT EXISTS (SELECT 1 FROM outbox WHERE {_USER_UNFINISHED})) "
            f"RETURNING {_OUTBOX_COLS}",
            (r.appid, r.openid, r.body, r.rule, now, now, now, r.appid, r.openid)).fetchone()
            for r in replies]

    def outbox_add(self, replies: Sequence[NewReply]) -> list[OutboxRow]:
        return [_outbox_row(r) for r in self._write(
            lambda conn, now: self._enqueue(conn, now, replies))]

    # -- outbox ---------------------------------------------------------------------------
    def outbox_claim(self, *, owner: str, lease: float, limit: int) -> list[OutboxRow]:
        if lease <= 0:
            raise ValueError("lease must be positive")
        # Senders poll: a read (no write lock, no commit) answers "nothing due" cheaply.
        with self._connection() as conn:
            if conn.execute("SELECT 1 FROM outbox WHERE is_head = 1 AND next_at <= ? LIMIT 1",
                            (self.clock(),)).fetchone() is None:
                return []
        # One UPDATE is atomic across processes; only heads (each user's oldest unfinished
        # row) are candidates, so a user has at most one row in flight.
        rows = self._write(lambda conn, now: conn.execute(
            "UPDATE outbox SET state = 'sending', owner = ?, next_at = ?, updated_at = ? "
            "WHERE id IN (SELECT id FROM outbox WHERE is_head = 1 AND next_at <= ? "
            f"ORDER BY next_at, id LIMIT ?) RETURNING {_OUTBOX_COLS}",
            (owner, now + lease, now, now, limit)).fetchall())
        return sorted((_outbox_row(r) for r in rows), key=lambda r: int(r.id))

    @staticmethod
    def _promote_oldest(conn: sqlite3.Connection, appid: str, openid: str) -> None:
        conn.execute("UPDATE outbox SET is_head = 1 WHERE id = "
                     f"(SELECT MIN(id) FROM outbox WHERE {_USER_UNFINISHED})", (appid, openid))

    def _mark(self, row_id: str, owner: str, assignments: str, params: tuple, *,
              finished: bool, also: ValueUpdate | None = None) -> bool:
        if not row_id.isdigit():
            if also is not None:
                self.update(also.key, also.fn, ttl=also.ttl)
            return False

        def write(conn: sqlite3.Connection, now: float) -> bool:
            if also is not None:
                self._apply(conn, now, also)
            row = conn.execute(f"UPDATE outbox SET {assignments}, owner = NULL, updated_at = ? "
                               "WHERE id = ? AND state = 'sending' AND owner = ? "
                               "RETURNING appid, openid",
                               (*params, now, int(row_id), owner)).fetchone()
            if row and finished:   # the user's next row, if any, is up
                conn.execute("UPDATE outbox SET is_head = 0 WHERE id = ?", (int(row_id),))
                self._promote_oldest(conn, *row)
            return row is not None
        return self._write(write)

    def outbox_sent(self, row_id: str, *, owner: str, also: ValueUpdate | None = None) -> bool:
        return self._mark(row_id, owner, "state = 'sent'", (), finished=True, also=also)

    def outbox_retry(self, row_id: str, *, owner: str, next_at: float, errcode: int | None,
                     errmsg: str | None) -> bool:
        return self._mark(row_id, owner, "state = 'pending', next_at = ?, "
                          "attempts = attempts + 1, errcode = ?, errmsg = ?",
                          (next_at, errcode, errmsg), finished=False)

    def outbox_dead(self, row_id: str, *, owner: str, errcode: int | None,
                    errmsg: str | None) -> bool:
        return self._mark(row_id, owner, "state = 'dead', attempts = attempts + 1, "
                          "errcode = ?, errmsg = ?", (errcode, errmsg), finished=True)

    def outbox_get(self, row_id: str) -> OutboxRow | None:
        if not row_id.isdigit():
            return None
        with self._connection() as conn:
            row = conn.execute(f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = ?",
                               (int(row_id),)).fetchone()
        return _outbox_row(row) if row else None

    def outbox_stats(self) -> dict[str, int]:
        with self._connection() as conn:
            counts = dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
        return {state: counts.get(state, 0) for state in OUTBOX_STATES}

    def outbox_list(self, *, state: str | None = None, limit: int = 100) -> list[OutboxRow]:
        where, params = ("WHERE state = ?", (state,)) if state is not None else ("", ())
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {_OUTBOX_COLS} FROM outbox {where} "
                                "ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [_outbox_row(r) for r in rows]

    def outbox_requeue(self, row_ids: Sequence[str] | None = None) -> int:
        def write(conn: sqlite3.Connection, now: float) -> int:
            if row_ids is None:
                users = conn.execute("UPDATE outbox SET state = 'pending', next_at = ?, "
                                     "updated_at = ?, owner = NULL WHERE state = 'dead' "
                                     "RETURNING appid, openid", (now, now)).fetchall()
            else:
                users = [row for i in row_ids if i.isdigit() for row in conn.execute(
                    "UPDATE outbox SET state = 'pending', next_at = ?, updated_at = ?, "
                    "owner = NULL WHERE id = ? AND state = 'dead' RETURNING appid, openid",
                    (now, now, int(i)))]
            for appid, openid in set(users):   # a requeued row may be older than the head
                conn.execute("UPDATE outbox SET is_head = 0 WHERE is_head = 1 AND "
                             f"{_USER_UNFINISHED}", (appid, openid))
                self._promote_oldest(conn, appid, openid)
            return len(users)
        return self._write(write)

    def outbox_purge(self, *, before: float) -> int:
        return self._write(lambda conn, now: conn.execute(
            "DELETE FROM outbox WHERE state IN ('sent', 'dead') AND updated_at < ?",
            (before,)).rowcount)

    # -- both queues ----------------------------------------------------------------------
    def backlog(self) -> Backlog:
        try:
            journal, journal_oldest = self._journal.backlog()
        except OSError as exc:
            raise StoreError(f"sqlite store {self.path}: journal: {exc}") from exc
        with self._connection() as conn:
            inbox, inbox_oldest = conn.execute(
                "SELECT COUNT(*), MIN(received_at) FROM inbox WHERE state = 'pending' "
                "AND expires_at > ?", (self.clock(),)).fetchone()
            counts = {state: conn.execute("SELECT COUNT(*) FROM outbox WHERE state = ?",
                                          (state,)).fetchone()[0]
                      for state in ("pending", "sending", "dead")}
            # Ids grow with creation: the oldest unsent reply is the least id of either state.
            outbox_oldest = conn.execute(
                "SELECT MIN(created_at) FROM outbox WHERE id IN "
                "(SELECT MIN(id) FROM outbox WHERE state = 'pending' "
                "UNION ALL SELECT MIN(id) FROM outbox WHERE state = 'sending')").fetchone()[0]
            inbox_dead = conn.execute("SELECT COUNT(*) FROM inbox WHERE state = 'dead'"
                                      ).fetchone()[0]
        return Backlog(journal=journal, journal_oldest=journal_oldest, inbox=inbox,
                       inbox_oldest=inbox_oldest, outbox=counts["pending"] + counts["sending"],
                       outbox_oldest=outbox_oldest, inbox_dead=inbox_dead,
                       outbox_dead=counts["dead"])
