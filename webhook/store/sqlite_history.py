"""The SQLite store's history: conversations, their timelines and the daily tallies the
console shows (``Store.history_*``, ``Store.tally_*``), in tables of the store's file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from webhook.store.base import Conversation, HistoryItem, HistoryNote

__all__ = ["SqliteHistory", "HISTORY_SCHEMA"]

HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    appid TEXT NOT NULL, openid TEXT NOT NULL, item TEXT NOT NULL, at REAL NOT NULL,
    direction TEXT NOT NULL, body TEXT NOT NULL, rule TEXT NOT NULL, state TEXT NOT NULL,
    errcode INTEGER, errmsg TEXT, noted_at REAL NOT NULL,
    PRIMARY KEY (appid, openid, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_timeline ON history (appid, openid, at);
CREATE INDEX IF NOT EXISTS history_noted ON history (noted_at);
CREATE TABLE IF NOT EXISTS conversations (
    appid TEXT NOT NULL, openid TEXT NOT NULL, last_at REAL NOT NULL, preview TEXT NOT NULL,
    flag TEXT, flagged_at REAL, PRIMARY KEY (appid, openid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_recent ON conversations (last_at);
CREATE TABLE IF NOT EXISTS tallies (
    kind TEXT NOT NULL, day INTEGER NOT NULL, name TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (kind, day, name)
) WITHOUT ROWID;
"""

_ITEM_COLS = "item, at, direction, body, rule, state, errcode, errmsg"
_CONVERSATION_COLS = "appid, openid, last_at, preview, flag, flagged_at"


class SqliteHistory:
    """Mixed into ``SqliteStore``, whose write turn and connections it uses."""

    clock: Callable[[], float]
    _write: Callable[[Callable[[sqlite3.Connection, float], Any]], Any]
    _connection: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def history_add(self, notes: Sequence[HistoryNote]) -> None:
        def write(conn: sqlite3.Connection, now: float) -> None:
            for note in notes:
                conn.executemany(
                    f"INSERT INTO history (appid, openid, {_ITEM_COLS}, noted_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                    "rule = excluded.rule, state = excluded.state, errcode = excluded.errcode, "
                    "errmsg = excluded.errmsg, noted_at = excluded.noted_at",
                    [(note.appid, note.openid, i.item, i.at, i.direction, i.body, i.rule,
                      i.state, i.errcode, i.errmsg, now) for i in note.items])
                conn.execute(
                    f"INSERT INTO conversations ({_CONVERSATION_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO UPDATE SET last_at = MAX(last_at, excluded.last_at), "
                    "preview = COALESCE(?, preview), flag = COALESCE(excluded.flag, flag), "
                    "flagged_at = CASE WHEN flag IS NOT NULL THEN flagged_at "
                    "ELSE excluded.flagged_at END",
                    (note.appid, note.openid, now, note.preview or "", note.flag,
                     None if note.flag is None else now, note.preview))
        if notes:
            self._write(write)

    def history_handled(self, appid: str, openid: str) -> bool:
        return self._write(lambda conn, now: conn.execute(
            "UPDATE conversations SET flag = NULL, flagged_at = NULL "
            "WHERE appid = ? AND openid = ? AND flag IS NOT NULL", (appid, openid)).rowcount == 1)

    def history_conversations(self, *, appids: Sequence[str] | None = None,
                              flagged: bool = False, limit: int = 100) -> list[Conversation]:
        where, params = [], []
        if appids is not None:
            where.append(f"appid IN ({', '.join('?' * len(appids))})")
            params += list(appids)
        if flagged:
            where.append("flag IS NOT NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {_CONVERSATION_COLS} FROM conversations {clause} "
                                "ORDER BY last_at DESC LIMIT ?", (*params, limit)).fetchall()
        return [Conversation(*row) for row in rows]

    def history_conversation(self, appid: str, openid: str) -> Conversation | None:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {_CONVERSATION_COLS} FROM conversations "
                               "WHERE appid = ? AND openid = ?", (appid, openid)).fetchone()
        return Conversation(*row) if row else None

    def history_timeline(self, appid: str, openid: str, *,
                         limit: int = 200) -> list[HistoryItem]:
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {_ITEM_COLS} FROM history WHERE appid = ? AND "
                                "openid = ? ORDER BY at DESC, direction DESC, length(item) DESC, item DESC "
                                "LIMIT ?",
                                (appid, openid, limit)).fetchall()
        return [HistoryItem(*row) for row in reversed(rows)]

    def history_purge(self, *, before: float) -> int:
        def write(conn: sqlite3.Connection, now: float) -> int:
            count = conn.execute("DELETE FROM history WHERE noted_at < ?", (before,)).rowcount
            conn.execute("DELETE FROM conversations WHERE last_at < ?", (before,))
            return count
        return self._write(write)

    def tally_add(self, counts: Mapping[tuple[str, int, str], int]) -> None:
        if counts:
            self._write(lambda conn, now: conn.executemany(
                "INSERT INTO tallies (kind, day, name, count) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET count = count + excluded.count",
                [(*key, n) for key, n in counts.items()]))

    def tally_top(self, kind: str, *, since: int, limit: int = 20) -> list[tuple[str, int]]:
        with self._connection() as conn:
            rows = conn.execute("SELECT name, SUM(count) AS total FROM tallies WHERE kind = ? "
                                "AND day >= ? GROUP BY name ORDER BY total DESC, name LIMIT ?",
                                (kind, since, limit)).fetchall()
        return [(name, int(total)) for name, total in rows]

    def tally_purge(self, *, before: int) -> int:
        return self._write(lambda conn, now: conn.execute(
            "DELETE FROM tallies WHERE day < ?", (before,)).rowcount)
