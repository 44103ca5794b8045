"""The background on a bad day: a push that cannot be handled is tried a few times and set
aside with its error; a store whose writes fail (a full disk) is tried less and less often,
logged once per interval with a count, and used again at once when it recovers; pushes taken
in a burst stay this process's while they wait for a handler."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections import Counter

from webhook.delivery.background import Background
from webhook.delivery.handling import Responder
from webhook.delivery.sender import Sender
from webhook.errors import StoreError
from webhook.logsafe import Repeats
from webhook.routing.router import Router
from webhook.store.base import DID_NOT_FINISH, InboxEntry
from webhook.store.sqlite import SqliteStore
from webhook.testing import PushBuilder
from webhook.testing.factories import make_text

APPID = "wx0123456789abcdef"


class FullDisk(SqliteStore):
    """A SQLite store whose writes fail while ``full`` (reads and journal appends work, as on
    a disk with no room left for the WAL); counts the writes tried, by the calling thread."""

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


def background(store: SqliteStore, router=Router, lease: float = 30, owner: str = "w",
               **kwargs) -> Background:
    responder = Responder(store=store, router=router, owner=owner, clock=time.time, budget=3)
    sender = Sender(store=store, api=NoSends(), owner=owner, clock=time.time,
                    rng=random.Random(1), lease=lease, max_attempts=3)
    return Background(store=store, responder=responder, sender=sender, owner=owner,
                      lease=lease, senders=1, **kwargs)


def recorded(store: SqliteStore, content: str = "你好", msg_id: int = 77) -> None:
    push = make_text(content, msg_id=msg_id, create_time=int(time.time()))
    payload = PushBuilder(appid=APPID, token="t", mode="plaintext").build(push).body
    store.inbox_record(InboxEntry(key=f"{APPID}:msg:{msg_id}", appid=APPID, format="xml",
                                  payload=payload.decode(), answer="success",
                                  received_at=time.time()), ttl=600)


def inbox_states(path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall())


def test_loops_back_off_while_the_store_fails_and_log_once_per_interval(tmp_path, caplog):
    store = FullDisk(str(tmp_path / "w.db"))
    recorded(store)
    work = background(store, retry_base=0.01, retry_cap=0.2, repeats=Repeats(60.0))
    with caplog.at_level(logging.INFO, logger="webhook"):
        work.start()
        try:
            time.sleep(1.5)
            failing = dict(store.tried)
            store.full = False                      # room again: the push goes through
            deadline = time.monotonic() + 5
            while inbox_states(tmp_path / "w.db") != {"done": 1}:
                assert time.monotonic() < deadline, "the take loop did not recover"
                time.sleep(0.02)
        finally:
            work.stop()
            store.close()
    # Polled every 5 ms, the take loop would have tried some 300 times in 1.5 s.
    assert 5 <= failing["take"] <= 20, failing
    lines = Counter(r.getMessage().split(" error=")[0] for r in caplog.records
                    if r.levelno >= logging.ERROR)
    assert lines == {"inbox take failed": 1}
    first = [r for r in caplog.records if r.getMessage().startswith("inbox take failed")][0]
    assert first.exc_info is not None and "disk is full" in first.getMessage()


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def test_a_push_whose_handling_keeps_failing_is_set_aside_after_its_attempts(tmp_path, caplog):
    """It used to be taken up again every lease until its key expired a day later. Its
    error says what failed and where, never what the customer wrote."""
    store = SqliteStore(str(tmp_path / "w.db"))
    tried = []

    def broken_router() -> Router:
        tried.append(time.monotonic())
        raise RuntimeError("the customer wrote 退货 to us")

    recorded(store, "退货")
    work = background(store, router=broken_router, lease=1, handle_attempts=3,
                      handle_retry=0.05)
    with caplog.at_level(logging.INFO, logger="webhook"):
        work.start()
        try:
            [dead] = wait_until(lambda: store.inbox_list(state="dead"))
            recorded(store, "退货")                          # WeChat's retry of it
            wait_until(lambda: "state=dead" in caplog.text)
        finally:
            work.stop()
    assert (dead.key, dead.attempts) == (f"{APPID}:msg:77", 3) and len(tried) == 3
    assert dead.error.startswith("RuntimeError at test_background.py:")
    assert f"push set aside key={APPID}:msg:77 attempts=3 error=RuntimeError at" in caplog.text
    assert caplog.text.count("handling failed") == 1       # the second: within the interval
    assert "退货" not in caplog.text and "退货" not in dead.error
    assert store.inbox_stats() == {"pending": 0, "dead": 1}
    store.close()


def test_a_push_whose_handler_never_finishes_is_set_aside_once_it_had_its_attempts(
        tmp_path, caplog):
    """Its handler's process died every time (a push that crashes it): it is not handed out
    again once it has had its attempts."""
    store = SqliteStore(str(tmp_path / "w.db"))
    entry = InboxEntry(key=f"{APPID}:9", appid=APPID, format="xml", payload="<xml/>",
                       answer="success", received_at=1.0)
    store.inbox_record(entry, ttl=600)
    store.inbox_take(owner="a process that died", lease=0.1, limit=1, max_attempts=5)
    work = background(store, lease=1, handle_attempts=1)
    with caplog.at_level(logging.WARNING, logger="webhook"):
        work.start()
        try:
            [dead] = wait_until(lambda: store.inbox_list(state="dead"))
        finally:
            work.stop()
    assert (dead.attempts, dead.error) == (1, DID_NOT_FINISH)
    assert f"push set aside key={APPID}:9 attempts=1 error=LeaseExpired" in caplog.text
    store.close()


def test_pushes_waiting_for_a_handler_past_their_lease_are_not_taken_by_another_process(
        tmp_path):
    """Taken in a burst, they wait in this process's queue longer than a lease: their leases
    are renewed as the running handler's is, so another process does not handle them too."""
    handled: Counter[str] = Counter()

    def slow() -> Router:
        router = Router()
        router.add(lambda message: True, lambda message, ctx: (
            handled.update([str(message.msg_id)]), time.sleep(0.4))[1], name="slow")
        return router

    first, second = (SqliteStore(str(tmp_path / "w.db")) for _ in range(2))
    for n in range(6):
        recorded(first, msg_id=n)
    works = [background(first, router=slow, lease=1, owner="p1", handler_threads=1)]
    works[0].start()
    try:
        wait_until(lambda: handled)            # p1 took all six; its queue is 2 s long
        works.append(background(second, router=slow, lease=1, owner="p2"))
        works[1].start()
        wait_until(lambda: inbox_states(tmp_path / "w.db") == {"done": 6})
    finally:
        for work in works:
            work.stop()
    assert handled == {str(n): 1 for n in range(6)}
    for store in (first, second):
        store.close()
