"""The SQLite store: one file in WAL mode, shared by every worker process of one host.

Each thread of each process has its own connection (re-opened after a fork); writes that
read first run inside ``BEGIN IMMEDIATE`` so concurrent workers serialise on the file lock
(``busy_timeout`` makes them wait instead of failing). ``sqlite:///:memory:`` keeps one
connection shared by all threads (for unit tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
import os
import sqlite3
import threading
import time

from webhook.errors import StoreError
from webhook.store.base import (OUTBOX_STATES, InboxEntry, NewReply, OutboxRow, Store,
                                ValueUpdate)

__all__ = ["SqliteStore"]

BUSY_TIMEOUT_MS = 5000
SWEEP_INTERVAL = 60.0   # seconds of store clock between sweeps of expired values / inbox keys
SWEEP_BATCH = 500

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
    attempts INTEGER NOT NULL, owner TEXT, lease_until REAL, expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_lease ON inbox (lease_until) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS inbox_expiry ON inbox (expires_at);
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
_INBOX_COLS = "key, appid, format, payload, answer, received_at, state, attempts"
_OUTBOX_COLS = ("id, appid, openid, body, rule, state, attempts, next_at, created_at, "
                "updated_at, errcode, errmsg")


def _inbox_entry(row: tuple) -> InboxEntry:
    return InboxEntry(*row)


def _outbox_row(row: tuple) -> OutboxRow:
    return OutboxRow(str(row[0]), *row[1:])


class SqliteStore(Store):
    """``Store`` over one SQLite file (``path``) or ``":memory:"``."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._local = threading.local()
        self._all: list[tuple[int, sqlite3.Connection]] = []   # (pid that opened it, conn)
        self._all_lock = threading.Lock()
        self._next_sweep = 0.0
        # ":memory:" is private to one connection: share it, one thread at a time.
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.RLock()
        self._write_lock = threading.Lock()
        try:
            if path == ":memory:":
                self._shared = self._connect()
                self._shared.executescript(_SCHEMA)
            else:
                with self._connection() as conn:
                    conn.execute("PRAGMA journal_mode=WAL")   # persistent in the file
                    conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open sqlite store {path}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, *, clock: Callable[[], float] = time.time) -> SqliteStore:
        """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``."""
        if not url.startswith("sqlite:///"):
            raise StoreError(f"sqlite store URL must look like sqlite:///path.db, got {url}")
        path = url[len("sqlite:///"):] or ":memory:"
        if path != ":memory:":
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise StoreError(f"sqlite store {url}: directory {directory} does not exist")
            if not os.access(directory, os.W_OK):
                raise StoreError(f"sqlite store {url}: directory {directory} is not writable")
        return cls(path, clock=clock)

    # -- connections ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # In WAL mode NORMAL loses no committed transaction when a process crashes (the
        # WAL is in the OS page cache); only a power loss can drop the last commits. We
        # promise durability against process crashes, so NORMAL is enough.
        conn.execute("PRAGMA synchronous=NORMAL")
        with self._all_lock:
            self._all.append((os.getpid(), conn))
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            if self._shared is not None:
                with self._shared_lock:
                    yield self._shared
                return
            local = self._local
            if getattr(local, "pid", None) != os.getpid():   # new thread, or forked child
                local.conn, local.pid = self._connect(), os.getpid()
            yield local.conn
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A connection for a write, one writing thread per process at a time.

        Threads of one process queue on a lock that wakes them at once, instead of each
        sleeping in SQLite's busy handler (1, 2, 5, 10… ms) while another holds the file's
        write lock; only other processes still meet the busy handler.
        """
        with self._write_lock, self._connection() as conn:
            yield conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the file's write lock from its first statement."""
        with self._writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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
        """Close this process's connections; those inherited through a fork belong to the
        parent (SQLite forbids using them in the child) and are left alone."""
        pid = os.getpid()
        with self._all_lock:
            mine = [conn for opener, conn in self._all if opener == pid]
            self._all = [(opener, conn) for opener, conn in self._all if opener != pid]
        for conn in mine:
            conn.close()
        self._local = threading.local()

    # -- values ---------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ? AND "
                               "(expires_at IS NULL OR expires_at > ?)",
                               (key, self.clock())).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        now = self.clock()
        with self._writing() as conn:
            conn.execute("INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
                         (key, value, None if ttl is None else now + ttl))

    def put_new(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        now = self.clock()
        with self._writing() as conn:
            cur = conn.execute(
                "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at WHERE kv.expires_at <= ?",
                (key, value, None if ttl is None else now + ttl, now))
            return cur.rowcount == 1

    def delete(self, key: str) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))

    def delete_if(self, key: str, expected: str) -> bool:
        with self._writing() as conn:
            cur = conn.execute("DELETE FROM kv WHERE key = ? AND value = ? AND "
                               "(expires_at IS NULL OR expires_at > ?)",
                               (key, expected, self.clock()))
            return cur.rowcount == 1

    def update(self, key: str, fn: Callable[[str | None], str | None], *,
               ttl: float | None = None) -> str | None:
        with self._transaction() as conn:
            now = self.clock()
            new = self._apply(conn, now, ValueUpdate(key, fn, ttl))
            self._maybe_sweep(conn, now)
        return new

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
        now = self.clock()
        with self._writing() as conn:
            cur = conn.execute(
                "INSERT INTO locks (name, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE locks.owner = excluded.owner OR locks.expires_at <= ?",
                (name, owner, now + lease, now))
            return cur.rowcount == 1

    def release(self, name: str, owner: str) -> bool:
        with self._writing() as conn:
            cur = conn.execute("DELETE FROM locks WHERE name = ? AND owner = ? AND expires_at > ?",
                               (name, owner, self.clock()))
            return cur.rowcount == 1

    # -- inbox ----------------------------------------------------------------------------
    def inbox_add(self, entry: InboxEntry, *, owner: str, lease: float,
                  ttl: float) -> InboxEntry | None:
        while True:
            now = self.clock()
            with self._writing() as conn:
                # One statement: inserts a new key, or replaces one whose ttl ran out.
                cur = conn.execute(
                    "INSERT INTO inbox (key, appid, format, payload, answer, received_at, state, "
                    "attempts, owner, lease_until, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'pending', 1, ?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET appid = excluded.appid, "
                    "format = excluded.format, payload = excluded.payload, "
                    "answer = excluded.answer, received_at = excluded.received_at, "
                    "state = 'pending', attempts = 1, owner = excluded.owner, "
                    "lease_until = excluded.lease_until, expires_at = excluded.expires_at "
                    "WHERE inbox.expires_at <= ?",
                    (entry.key, entry.appid, entry.format, entry.payload, entry.answer,
                     entry.received_at, owner, now + lease, now + ttl, now))
                if cur.rowcount == 1:
                    self._maybe_sweep(conn, now)
                    return None
                row = conn.execute(f"SELECT {_INBOX_COLS} FROM inbox WHERE key = ? "
                                   "AND expires_at > ?", (entry.key, now)).fetchone()
            if row:
                return _inbox_entry(row)
            # the recorded key expired between the two statements: try again

    def inbox_claim(self, *, owner: str, lease: float, limit: int) -> list[InboxEntry]:
        if lease <= 0:
            raise ValueError("lease must be positive")
        now = self.clock()
        with self._writing() as conn:
            rows = conn.execute(
                "UPDATE inbox SET owner = ?, lease_until = ?, attempts = attempts + 1 "
                "WHERE key IN (SELECT key FROM inbox WHERE state = 'pending' "
                "AND lease_until <= ? AND expires_at > ? ORDER BY lease_until LIMIT ?) "
                f"RETURNING {_INBOX_COLS}",
                (owner, now + lease, now, now, limit)).fetchall()
        return sorted((_inbox_entry(r) for r in rows), key=lambda e: e.received_at)

    def inbox_renew(self, key: str, *, owner: str, lease: float) -> bool:
        with self._writing() as conn:
            cur = conn.execute("UPDATE inbox SET lease_until = ? WHERE key = ? AND owner = ? "
                               "AND state = 'pending'", (self.clock() + lease, key, owner))
        return cur.rowcount == 1

    def inbox_finish(self, key: str, replies: Sequence[NewReply], *, owner: str,
                     also: ValueUpdate | None = None) -> list[OutboxRow]:
        with self._transaction() as conn:
            now = self.clock()
            if also is not None:
                self._apply(conn, now, also)
            cur = conn.execute("UPDATE inbox SET state = 'done', owner = NULL, lease_until = NULL "
                               "WHERE key = ? AND state = 'pending'", (key,))
            if cur.rowcount == 0:
                return []
            rows = [conn.execute(
                "INSERT INTO outbox (appid, openid, body, rule, state, attempts, next_at, "
                "created_at, updated_at, is_head) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, "
                f"NOT EXISTS (SELECT 1 FROM outbox WHERE {_USER_UNFINISHED})) "
                f"RETURNING {_OUTBOX_COLS}",
                (r.appid, r.openid, r.body, r.rule, now, now, now, r.appid, r.openid)).fetchone()
                for r in replies]
        return [_outbox_row(r) for r in rows]

    # -- outbox ---------------------------------------------------------------------------
    def outbox_claim(self, *, owner: str, lease: float, limit: int) -> list[OutboxRow]:
        if lease <= 0:
            raise ValueError("lease must be positive")
        now = self.clock()
        with self._writing() as conn:
            # One UPDATE is atomic across processes; only heads (each user's oldest
            # unfinished row) are candidates, so a user has at most one row in flight.
            rows = conn.execute(
                "UPDATE outbox SET state = 'sending', owner = ?, next_at = ?, updated_at = ? "
                "WHERE id IN (SELECT id FROM outbox WHERE is_head = 1 AND next_at <= ? "
                f"ORDER BY next_at, id LIMIT ?) RETURNING {_OUTBOX_COLS}",
                (owner, now + lease, now, now, limit)).fetchall()
        return sorted((_outbox_row(r) for r in rows), key=lambda r: int(r.id))

    @staticmethod
    def _promote_oldest(conn: sqlite3.Connection, appid: str, openid: str) -> None:
        conn.execute("UPDATE outbox SET is_head = 1 WHERE id = "
                     f"(SELECT MIN(id) FROM outbox WHERE {_USER_UNFINISHED})", (appid, openid))

    def _mark(self, row_id: str, owner: str, assignments: str, params: tuple, *,
              finished: bool) -> bool:
        if not row_id.isdigit():
            return False
        with self._transaction() as conn:
            row = conn.execute(f"UPDATE outbox SET {assignments}, owner = NULL, updated_at = ? "
                               "WHERE id = ? AND state = 'sending' AND owner = ? "
                               "RETURNING appid, openid",
                               (*params, self.clock(), int(row_id), owner)).fetchone()
            if row and finished:   # the user's next row, if any, is up
                conn.execute("UPDATE outbox SET is_head = 0 WHERE id = ?", (int(row_id),))
                self._promote_oldest(conn, *row)
        return row is not None

    def outbox_sent(self, row_id: str, *, owner: str) -> bool:
        return self._mark(row_id, owner, "state = 'sent'", (), finished=True)

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
        now = self.clock()
        with self._transaction() as conn:
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

    def outbox_purge(self, *, before: float) -> int:
        with self._writing() as conn:
            return conn.execute("DELETE FROM outbox WHERE state IN ('sent', 'dead') "
                                "AND updated_at < ?", (before,)).rowcount
