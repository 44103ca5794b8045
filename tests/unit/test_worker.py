"""The background loops on a bad day: a store whose writes fail (a full disk) is tried less and
less often, logged once per interval with a count, and used again at once when it recovers."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections import Counter

from webhook.delivery import Handler
from webhook.errors import StoreError
from webhook.logsafe import Repeats
from webhook.routing import Router
from webhook.sender import Sender
from webhook.store.sqlite import SqliteStore
from webhook.testing import PushBuilder
from webhook.testing.factories import make_text
from webhook.worker import Background

APPID = "wx0123456789abcdef"


class FullDisk(SqliteStore):
    """A SQLite store whose writes fail while ``full`` (reads and journal appends work, as on
    a disk with no room left for the WAL); counts the writes tried, by the caller's loop."""

    full = True

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.tried: Counter[str] = Counter()

    def _write(self, fn):
        self.tried[threading.current_thread().name.split("-")[1]] += 1
        if self.full:
            raise StoreError(f"sqlite store {self.path}: database or disk is full")
        return super()._write(fn)


class NoSends:
    def send(self, appid: str, openid: str, payload: dict) -> None:
        raise AssertionError("nothing should be sent")


def background(store: SqliteStore, **kwargs) -> Background:
    handler = Handler(store=store, router=lambda: Router(), owner="w", clock=time.time, budget=3)
    sender = Sender(store=store, api=NoSends(), owner="w", clock=time.time,
                    rng=random.Random(1), lease=30, max_attempts=3)
    return Background(store=store, handler=handler, sender=sender, owner="w", lease=30,
                      dedupe_ttl=600, senders=1, **kwargs)


def logged(store: SqliteStore) -> None:
    push = make_text("你好", msg_id=77, create_time=int(time.time()))
    payload = PushBuilder(appid=APPID, token="t", mode="plaintext").build(push).body
    store.inbox_log(APPID, "xml", payload, "success", time.time())


def inbox_states(path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall())


def test_loops_back_off_while_the_store_fails_and_log_once_per_interval(tmp_path, caplog):
    store = FullDisk(str(tmp_path / "w.db"))
    logged(store)
    work = background(store, retry_base=0.01, retry_cap=0.2, repeats=Repeats(60.0))
    with caplog.at_level(logging.INFO, logger="webhook"):
        work.start()
        try:
            time.sleep(1.5)
            failing = dict(store.tried)
            store.full = False                      # room again: the push goes through
            deadline = time.monotonic() + 5
            while inbox_states(tmp_path / "w.db") != {"done": 1}:
                assert time.monotonic() < deadline, "the ingester did not recover"
                time.sleep(0.02)
        finally:
            work.stop()
            store.close()
    # Polled every 5 ms, the ingester would have tried some 300 times in 1.5 s.
    assert 5 <= failing["ingest"] <= 20, failing
    assert failing["sweep"] <= 20, failing
    lines = Counter(r.getMessage().split(" error=")[0] for r in caplog.records
                    if r.levelno >= logging.ERROR)
    assert lines == {"inbox ingest failed": 1, "inbox sweep failed": 1}
    first = [r for r in caplog.records if r.getMessage().startswith("inbox ingest failed")][0]
    assert first.exc_info is not None and "disk is full" in first.getMessage()
