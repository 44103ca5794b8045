"""The Store contract (webhook.store.base): one suite, every backend must pass it."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis

from webhook.errors import StoreError
from webhook.store import open_store
from webhook.store.base import (DID_NOT_FINISH, INBOX_STATES, OUTBOX_STATES, Backlog,
                                HistoryItem, HistoryNote, InboxEntry, NewReply, OutboxRow, Store,
                                ValueUpdate)
from webhook.store.redis import RedisStore
from webhook.store.sqlite import SqliteStore


def take(store: Store, owner: str, *, lease: float = 30, limit: int = 10,
         max_attempts: int = 5) -> list[InboxEntry]:
    return store.inbox_take(owner=owner, lease=lease, limit=limit, max_attempts=max_attempts)


# -- values ---------------------------------------------------------------------------------
def test_get_put_delete(store: Store) -> None:
    assert store.get("k") is None
    store.put("k", "v1")
    assert store.get("k") == "v1"
    store.put("k", "v2|with|bars\nand newline")
    assert store.get("k") == "v2|with|bars\nand newline"
    store.delete("k")
    assert store.get("k") is None
    store.delete("k")   # deleting an absent key is fine


def test_ttl_expiry_follows_the_store_clock(store: Store, clock) -> None:
    store.put("k", "v", ttl=10)
    clock.advance(9.9)
    assert store.get("k") == "v"
    clock.advance(0.1)
    assert store.get("k") is None


def test_put_without_ttl_clears_an_earlier_ttl(store: Store, clock) -> None:
    store.put("k", "v", ttl=10)
    store.put("k", "w")
    clock.advance(3600)
    assert store.get("k") == "w"


def test_put_new_sets_only_if_absent_or_expired(store: Store, clock) -> None:
    assert store.put_new("k", "first", ttl=10) is True
    assert store.put_new("k", "second", ttl=10) is False
    assert store.get("k") == "first"
    clock.advance(10)
    assert store.put_new("k", "third") is True
    assert store.get("k") == "third"
    assert store.put_new("k", "fourth") is False   # no ttl: never expires
    clock.advance(10**6)
    assert store.get("k") == "third"


def test_delete_if_only_when_equal(store: Store, clock) -> None:
    store.put("tok", "A", ttl=60)
    assert store.delete_if("tok", "B") is False
    assert store.get("tok") == "A"
    assert store.delete_if("tok", "A") is True
    assert store.get("tok") is None
    assert store.delete_if("tok", "A") is False
    store.put("tok", "A", ttl=5)
    clock.advance(5)
    assert store.delete_if("tok", "A") is False   # expired counts as absent


def test_update_replaces_and_deletes(store: Store, clock) -> None:
    assert store.update("n", lambda old: "1" if old is None else str(int(old) + 1)) == "1"
    assert store.update("n", lambda old: str(int(old) + 1), ttl=5) == "2"
    assert store.get("n") == "2"
    clock.advance(5)
    assert store.update("n", lambda old: "fresh" if old is None else "stale") == "fresh"
    assert store.update("n", lambda old: None) is None
    assert store.get("n") is None


def test_update_is_atomic_across_threads(store: Store) -> None:
    def work() -> None:
        for _ in range(200):
            store.update("counter", lambda old: str(int(old or "0") + 1))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counter") == "800"


# -- lease lock -----------------------------------------------------------------------------
def test_lock_is_exclusive_until_released(store: Store) -> None:
    assert store.acquire("refresh:wx1", "a", lease=30) is True
    assert store.acquire("refresh:wx1", "b", lease=30) is False
    assert store.acquire("refresh:wx2", "b", lease=30) is True   # another lock is independent
    assert store.release("refresh:wx1", "b") is False            # only the holder releases
    assert store.acquire("refresh:wx1", "b", lease=30) is False
    assert store.release("refresh:wx1", "a") is True
    assert store.release("refresh:wx1", "a") is False
    assert store.acquire("refresh:wx1", "b", lease=30) is True


def test_lock_lease_expires(store: Store, clock) -> None:
    assert store.acquire("L", "a", lease=10) is True
    clock.advance(9.9)
    assert store.acquire("L", "b", lease=10) is False
    clock.advance(0.1)
    assert store.acquire("L", "b", lease=10) is True
    assert store.release("L", "a") is False   # a's lease ran out; b holds it now
    assert store.acquire("L", "c", lease=10) is False
    assert store.release("L", "b") is True


def test_lock_holder_reacquiring_extends_its_lease(store: Store, clock) -> None:
    assert store.acquire("L", "a", lease=10) is True
    clock.advance(8)
    assert store.acquire("L", "a", lease=10) is True
    clock.advance(8)
    assert store.acquire("L", "b", lease=10) is False


def test_locks_and_values_do_not_collide(store: Store) -> None:
    store.put("L", "value")
    assert store.acquire("L", "a", lease=10) is True
    assert store.get("L") == "value"


# -- inbox ----------------------------------------------------------------------------------
def entry(key: str = "wx1:1001", *, answer: str = "success",
          received_at: float = 0.0) -> InboxEntry:
    return InboxEntry(key=key, appid="wx1", format="xml", payload=f"<xml>{key}</xml>",
                      answer=answer, received_at=received_at)


def reply(openid: str = "o1", body: str = '{"msgtype":"text"}', *, appid: str = "wx1",
          rule: str = "faq") -> NewReply:
    return NewReply(appid=appid, openid=openid, body=body, rule=rule)


def taken(store: Store, *entries: InboxEntry, owner: str = "w1", lease: float = 30,
          ttl: float = 600) -> None:
    """Record ``entries`` (new keys) and take them all, leased to ``owner``."""
    for recorded in entries:
        assert store.inbox_record(recorded, ttl=ttl) is None
    assert sorted(e.key for e in take(store, owner, lease=lease, limit=len(entries) + 1)) == \
        sorted(e.key for e in entries)


def test_a_recorded_push_is_taken_at_once_and_once(store: Store) -> None:
    assert store.inbox_record(entry(answer="first"), ttl=600) is None   # a new key
    [first] = take(store, "w1")
    assert (first.key, first.appid, first.format, first.payload, first.answer) == (
        "wx1:1001", "wx1", "xml", "<xml>wx1:1001</xml>", "first")
    assert (first.state, first.attempts) == ("pending", 1)
    assert take(store, "w2") == []


def test_a_retry_is_answered_as_the_first_delivery_was(store: Store, caplog) -> None:
    """Not recomputed: the rules may have changed in between."""
    taken(store, entry(answer="first"))
    with caplog.at_level(logging.INFO, logger="webhook.store"):
        assert store.inbox_record(entry(answer="second"), ttl=600) == "first"
    assert "push duplicate appid=wx1 key=1001 state=pending" in caplog.text
    store.inbox_finish("wx1:1001", [], owner="w1")
    assert store.inbox_record(entry(answer="third"), ttl=600) == "first"
    assert take(store, "w2") == []                       # never handled again


def test_a_push_recorded_while_the_delivery_process_waits_is_taken_at_once(store: Store) -> None:
    recorder = threading.Timer(0.3, lambda: store.inbox_record(entry(), ttl=600))
    started = time.monotonic()
    recorder.start()
    [first] = store.inbox_take(owner="w1", lease=30, limit=10, max_attempts=5, wait=5)
    assert first.key == "wx1:1001" and 0.3 <= time.monotonic() - started < 1.5
    recorder.join()
    started = time.monotonic()
    assert store.inbox_take(owner="w1", lease=30, limit=10, max_attempts=5, wait=0.2) == []
    assert time.monotonic() - started >= 0.2


def test_a_recorded_push_counts_as_pending_before_it_is_taken(store: Store) -> None:
    store.inbox_record(entry(), ttl=600)
    assert store.inbox_stats() == {"pending": 1, "dead": 0}
    take(store, "w1")
    assert store.inbox_stats() == {"pending": 1, "dead": 0}
    store.inbox_finish("wx1:1001", [], owner="w1")
    assert store.inbox_stats() == {"pending": 0, "dead": 0}


def test_inbox_keys_expire_after_ttl(store: Store, clock) -> None:
    taken(store, entry())
    clock.advance(599)
    assert store.inbox_record(entry(answer="retry"), ttl=600) == "success"
    clock.advance(1)
    assert store.inbox_record(entry(answer="new"), ttl=600) is None   # a new key
    assert [e.answer for e in take(store, "w2")] == ["new"]
    assert store.inbox_record(entry(), ttl=600) == "new"


def test_inbox_take_takes_again_only_entries_whose_lease_ran_out(store: Store, clock) -> None:
    taken(store, entry("wx1:a", received_at=1.0), lease=10)
    clock.advance(5)
    taken(store, entry("wx1:b", received_at=2.0), entry("wx1:c", received_at=3.0), lease=10)
    store.inbox_finish("wx1:c", [], owner="w1")
    assert take(store, "w2", lease=30, limit=10) == []
    clock.advance(5)   # a's lease ran out; b's has 5 s left; c is done
    again = take(store, "w2", lease=30, limit=10)
    assert [(e.key, e.attempts) for e in again] == [("wx1:a", 2)]
    assert take(store, "w3", lease=30, limit=10) == []   # w2 holds a now
    clock.advance(5)
    assert [e.key for e in take(store, "w3", lease=30, limit=10)] == ["wx1:b"]


def test_inbox_renew_keeps_a_slow_handler_s_entry(store: Store, clock) -> None:
    taken(store, entry("wx1:slow"), lease=10)
    for _ in range(3):
        clock.advance(8)
        assert store.inbox_renew("wx1:slow", owner="w1", lease=10)
        assert take(store, "w2", lease=10, limit=10) == []
    assert not store.inbox_renew("wx1:slow", owner="w2", lease=10)   # only the holder
    clock.advance(11)
    assert [e.key for e in take(store, "w2", lease=10, limit=10)] == ["wx1:slow"]
    assert not store.inbox_renew("wx1:slow", owner="w1", lease=10)   # lost it
    store.inbox_finish("wx1:slow", [], owner="w2")
    assert not store.inbox_renew("wx1:slow", owner="w2", lease=10)   # done


def test_inbox_take_respects_limit_and_skips_expired_keys(store: Store, clock) -> None:
    for i in range(5):
        store.inbox_record(entry(f"wx1:{i}", received_at=float(i)), ttl=60)
    first = take(store, "w2", lease=100, limit=3)
    rest = take(store, "w3", lease=100, limit=10)
    assert (len(first), len(rest)) == (3, 2)
    assert sorted(e.key for e in first + rest) == [f"wx1:{i}" for i in range(5)]
    clock.advance(100)   # every lease ran out, but so did every key's ttl
    assert take(store, "w4", lease=10, limit=10) == []


def test_inbox_finish_enqueues_replies_once(store: Store, clock) -> None:
    taken(store, entry(), lease=10)
    rows = store.inbox_finish("wx1:1001", [reply("o1", "r1"), reply("o1", "r2", rule="")],
                              owner="w1")
    assert [(r.openid, r.body, r.state, r.attempts, r.next_at) for r in rows] == [
        ("o1", "r1", "pending", 0, clock.now), ("o1", "r2", "pending", 0, clock.now)]
    assert (rows[0].rule, rows[1].rule, rows[0].errcode, rows[0].errmsg) == ("faq", "", None, None)
    assert int(rows[0].id) < int(rows[1].id)
    assert all(isinstance(r.id, str) for r in rows)
    assert outbox_row(store, rows[0].id) == rows[0]
    # the handler of a retry (lease ran out) finishing later changes nothing
    assert store.inbox_finish("wx1:1001", [reply("o1", "again")], owner="w2") == []
    assert store.outbox_stats()["pending"] == 2
    assert store.inbox_record(entry(answer="retry"), ttl=600) == "success"
    clock.advance(10)
    assert take(store, "w3", lease=10, limit=10) == []   # done: never taken again


def test_inbox_finish_applies_a_value_update_with_it(store: Store) -> None:
    from webhook.store import ValueUpdate

    taken(store, entry("wx1:w"))
    count = ValueUpdate("window:o1", lambda old: str(int(old or 0) + 1), ttl=60)
    assert len(store.inbox_finish("wx1:w", [NewReply("wx1", "o1", "{}")], owner="w1",
                                  also=count)) == 1
    assert store.get("window:o1") == "1"


def test_inbox_finish_of_an_unknown_key_is_a_no_op(store: Store) -> None:
    assert store.inbox_finish("wx1:nope", [reply()], owner="w1") == []
    assert store.outbox_stats()["pending"] == 0


def test_inbox_retry_waits_until_next_at_and_keeps_the_error(store: Store, clock) -> None:
    taken(store, entry("wx1:r"))
    assert not store.inbox_retry("wx1:r", owner="w2", next_at=clock.now + 5, error="E")
    assert store.inbox_retry("wx1:r", owner="w1", next_at=clock.now + 5, error="KeyError")
    assert not store.inbox_renew("wx1:r", owner="w1", lease=30)   # no longer w1's
    clock.advance(4.9)
    assert take(store, "w2") == []
    clock.advance(0.1)
    [again] = take(store, "w2")
    assert (again.key, again.state, again.attempts, again.error) == (
        "wx1:r", "pending", 2, "KeyError")
    assert store.inbox_finish("wx1:r", [reply()], owner="w2")   # handled at last


def test_inbox_take_sets_aside_an_entry_that_used_up_its_attempts(store: Store, clock) -> None:
    """Its handler dies every time (a push that crashes its process): after
    ``max_attempts`` takes it is set aside, not handed out forever."""
    taken(store, entry("wx1:poison", received_at=7.0), lease=10)
    clock.advance(10)
    assert [e.attempts for e in take(store, "w2", lease=10, max_attempts=2)] == [2]
    clock.advance(10)
    [dead] = take(store, "w3", lease=10, max_attempts=2)
    assert (dead.key, dead.state, dead.attempts, dead.error) == (
        "wx1:poison", "dead", 2, DID_NOT_FINISH)
    clock.advance(10)
    assert take(store, "w4", max_attempts=2) == []
    assert not store.inbox_renew("wx1:poison", owner="w3", lease=10)
    assert store.inbox_finish("wx1:poison", [reply()], owner="w2") == []
    assert store.inbox_stats() == {"pending": 0, "dead": 1}


def test_a_dead_entry_keeps_its_key_past_its_ttl_until_purged(store: Store, clock) -> None:
    taken(store, entry("wx1:d", received_at=100.0), lease=10, ttl=60)
    assert not store.inbox_dead("wx1:d", owner="w2", error="E")   # only its holder
    assert store.inbox_dead("wx1:d", owner="w1", error="ValueError at bot.py:12")
    assert not store.inbox_dead("wx1:d", owner="w1", error="again")
    clock.advance(3600)                                     # long past the key's ttl
    assert store.inbox_record(entry("wx1:d", answer="retry"), ttl=60) == "success"
    assert take(store, "w2") == []
    [dead] = store.inbox_list(state="dead")
    assert (dead.key, dead.error) == ("wx1:d", "ValueError at bot.py:12")
    assert store.inbox_purge(before=100.0) == 0             # received at 100: not before
    assert store.inbox_purge(before=100.5) == 1
    assert store.inbox_list() == [] and store.inbox_stats() == {"pending": 0, "dead": 0}
    assert store.inbox_record(entry("wx1:d", answer="new"), ttl=60) is None


def test_inbox_requeue_brings_dead_entries_back(store: Store, clock) -> None:
    taken(store, *(entry(key) for key in ("wx1:x", "wx1:y", "wx1:z")), lease=10, ttl=60)
    for key in ("wx1:x", "wx1:y", "wx1:z"):
        assert store.inbox_dead(key, owner="w1", error="E")
    clock.advance(3600)
    assert store.inbox_requeue(["wx1:x", "wx1:nope"], ttl=600) == 1
    assert store.inbox_requeue(["wx1:x"], ttl=600) == 0          # no longer dead
    [back] = take(store, "w2", max_attempts=1)                  # its attempts start over
    assert (back.key, back.state, back.attempts) == ("wx1:x", "pending", 1)
    assert store.inbox_finish("wx1:x", [reply()], owner="w2")
    assert store.inbox_requeue(ttl=600) == 2
    assert store.inbox_stats() == {"pending": 2, "dead": 0}
    clock.advance(600)                                           # the new ttl ran out too
    assert take(store, "w3") == []


def test_inbox_stats_and_list_by_state_newest_first(store: Store, clock) -> None:
    taken(store, *(entry(f"wx1:{i}", received_at=float(i)) for i in range(4)))
    store.inbox_dead("wx1:0", owner="w1", error="E0")
    store.inbox_dead("wx1:2", owner="w1", error="E2")
    store.inbox_finish("wx1:3", [], owner="w1")
    assert store.inbox_stats() == {state: 2 if state == "dead" else 1 for state in INBOX_STATES}
    assert [(e.key, e.error) for e in store.inbox_list(state="dead")] == [
        ("wx1:2", "E2"), ("wx1:0", "E0")]
    assert [e.key for e in store.inbox_list(state="pending")] == ["wx1:1"]
    assert [e.key for e in store.inbox_list()] == ["wx1:2", "wx1:1", "wx1:0"]
    assert [e.key for e in store.inbox_list(limit=1)] == ["wx1:2"]
    assert store.inbox_list(state="dead")[0].payload == "<xml>wx1:2</xml>"


# -- outbox ---------------------------------------------------------------------------------
def outbox_row(store: Store, row_id: str) -> OutboxRow | None:
    return next((row for row in store.outbox_list(limit=10**6) if row.id == row_id), None)


def enqueue(store: Store, *replies: NewReply, key: str | None = None) -> list[str]:
    key = key or f"wx1:{len(store.outbox_list(limit=10**6))}:{replies[0].body}"
    taken(store, entry(key), owner="h")
    return [r.id for r in store.inbox_finish(key, list(replies), owner="h")]


def test_outbox_keeps_order_per_user(store: Store) -> None:
    a1, a2 = enqueue(store, reply("oA", "a1"), reply("oA", "a2"))
    (b1,) = enqueue(store, reply("oB", "b1"))
    (a3,) = enqueue(store, reply("oA", "a3"))
    claimed = store.outbox_claim(owner="s1", lease=30, limit=10)
    assert [r.id for r in claimed] == [a1, b1]    # one row per user per claim
    assert all(r.state == "sending" for r in claimed)
    assert store.outbox_claim(owner="s2", lease=30, limit=10) == []   # a2 waits for a1
    assert store.outbox_sent(a1, owner="s1") is True
    assert [r.id for r in store.outbox_claim(owner="s2", lease=30, limit=10)] == [a2]
    assert store.outbox_sent(a2, owner="s2") is True
    assert store.outbox_sent(b1, owner="s1") is True
    assert [r.id for r in store.outbox_claim(owner="s2", lease=30, limit=10)] == [a3]
    assert outbox_row(store, a1).state == "sent"


def test_outbox_claim_respects_limit(store: Store) -> None:
    ids = [enqueue(store, reply(f"o{i}", f"m{i}"))[0] for i in range(5)]
    first = store.outbox_claim(owner="s1", lease=30, limit=2)
    second = store.outbox_claim(owner="s2", lease=30, limit=10)
    assert len(first) == 2 and len(second) == 3
    assert sorted(r.id for r in first + second) == sorted(ids)
    assert store.outbox_claim(owner="s3", lease=30, limit=10) == []


def test_outbox_lease_expiry_lets_another_owner_claim(store: Store, clock) -> None:
    (r1,) = enqueue(store, reply("oA", "a1"))
    assert [r.id for r in store.outbox_claim(owner="s1", lease=30, limit=10)] == [r1]
    clock.advance(29)
    assert store.outbox_claim(owner="s2", lease=30, limit=10) == []
    clock.advance(1)
    again = store.outbox_claim(owner="s2", lease=30, limit=10)
    assert [(r.id, r.state) for r in again] == [(r1, "sending")]
    # the first sender lost the row: its marks are refused
    assert store.outbox_sent(r1, owner="s1") is False
    assert store.outbox_retry(r1, owner="s1", next_at=clock.now, errcode=-1, errmsg="x") is False
    assert store.outbox_dead(r1, owner="s1", errcode=40003, errmsg="x") is False
    assert store.outbox_sent(r1, owner="s2") is True
    assert store.outbox_sent(r1, owner="s2") is False   # not sending any more


def test_outbox_marks_by_a_non_owner_are_refused(store: Store, clock) -> None:
    (r1,) = enqueue(store, reply("oA", "a1"))
    assert store.outbox_sent(r1, owner="s1") is False   # pending: nobody holds it
    store.outbox_claim(owner="s1", lease=30, limit=10)
    assert store.outbox_sent(r1, owner="s2") is False
    assert store.outbox_retry(r1, owner="s2", next_at=clock.now, errcode=None, errmsg=None) is False
    assert store.outbox_dead(r1, owner="s2", errcode=None, errmsg=None) is False
    assert store.outbox_sent("999999", owner="s1") is False
    assert outbox_row(store, r1).state == "sending"


def test_outbox_sent_counts_the_send_in_the_window_whoever_holds_the_row(store: Store) -> None:
    """The reply went out either way: the user's send window counts it."""
    count = ValueUpdate("quota:wx1:oA", lambda old: str(int(old or 0) + 1), ttl=60)
    r1, r2 = enqueue(store, reply("oA", "a1"), reply("oA", "a2"))
    store.outbox_claim(owner="s1", lease=30, limit=10)
    assert store.outbox_sent(r1, owner="s1", also=count) is True
    assert store.get("quota:wx1:oA") == "1"
    store.outbox_claim(owner="s1", lease=30, limit=10)
    assert store.outbox_sent(r2, owner="s2", also=count) is False
    assert store.get("quota:wx1:oA") == "2"


def test_outbox_retry_backs_off_until_next_at(store: Store, clock) -> None:
    r1, r2 = enqueue(store, reply("oA", "a1"), reply("oA", "a2"))
    store.outbox_claim(owner="s1", lease=30, limit=10)
    clock.advance(1)
    assert store.outbox_retry(r1, owner="s1", next_at=clock.now + 20, errcode=-1,
                              errmsg="system busy") is True
    row = outbox_row(store, r1)
    assert (row.state, row.attempts, row.next_at, row.errcode, row.errmsg) == (
        "pending", 1, clock.now + 20, -1, "system busy")
    assert row.updated_at == clock.now
    clock.advance(19)
    assert store.outbox_claim(owner="s1", lease=30, limit=10) == []   # r2 waits behind r1
    clock.advance(1)
    assert [r.id for r in store.outbox_claim(owner="s2", lease=30, limit=10)] == [r1]
    assert store.outbox_retry(r1, owner="s2", next_at=clock.now, errcode=None,
                              errmsg=None) is True
    row = outbox_row(store, r1)
    assert (row.attempts, row.errcode, row.errmsg) == (2, None, None)
    assert [r.id for r in store.outbox_claim(owner="s2", lease=30, limit=10)] == [r1]


def test_outbox_dead_rows_are_skipped_and_the_next_row_proceeds(store: Store, clock) -> None:
    r1, r2 = enqueue(store, reply("oA", "a1"), reply("oA", "a2"))
    store.outbox_claim(owner="s1", lease=30, limit=10)
    assert store.outbox_dead(r1, owner="s1", errcode=45015, errmsg="response out of time limit") \
        is True
    row = outbox_row(store, r1)
    assert (row.state, row.errcode, row.errmsg) == ("dead", 45015, "response out of time limit")
    assert [r.id for r in store.outbox_claim(owner="s1", lease=30, limit=10)] == [r2]
    clock.advance(3600)
    assert store.outbox_sent(r2, owner="s1") is True
    assert store.outbox_claim(owner="s1", lease=30, limit=10) == []   # dead is never claimed


def test_outbox_requeue_brings_dead_rows_back(store: Store, clock) -> None:
    ids = [enqueue(store, reply(f"o{i}", f"m{i}"))[0] for i in range(3)]
    store.outbox_claim(owner="s1", lease=30, limit=10)
    for row_id in ids:
        store.outbox_dead(row_id, owner="s1", errcode=48001, errmsg="api unauthorized")
    assert store.outbox_requeue([ids[0], "424242"]) == 1
    assert store.outbox_requeue([ids[0]]) == 0   # pending now, not dead
    row = outbox_row(store, ids[0])
    assert (row.state, row.next_at) == ("pending", clock.now)
    assert store.outbox_requeue() == 2
    assert store.outbox_stats() == {"pending": 3, "sending": 0, "sent": 0, "dead": 0}
    assert sorted(r.id for r in store.outbox_claim(owner="s2", lease=30, limit=10)) == sorted(ids)


def test_outbox_requeued_row_goes_back_to_its_place_in_the_users_order(store: Store) -> None:
    r1, r2 = enqueue(store, reply("oA", "a1"), reply("oA", "a2"))
    store.outbox_claim(owner="s1", lease=30, limit=10)
    store.outbox_dead(r1, owner="s1", errcode=-1, errmsg="x")
    store.outbox_requeue([r1])
    assert [r.id for r in store.outbox_claim(owner="s1", lease=30, limit=10)] == [r1]
    store.outbox_sent(r1, owner="s1")
    assert [r.id for r in store.outbox_claim(owner="s1", lease=30, limit=10)] == [r2]


def test_outbox_requeue_while_a_newer_row_is_in_flight(store: Store, clock) -> None:
    r1, r2, r3 = enqueue(store, reply("oA", "a1"), reply("oA", "a2"), reply("oA", "a3"))
    store.outbox_claim(owner="s1", lease=30, limit=10)
    store.outbox_dead(r1, owner="s1", errcode=-1, errmsg="x")
    assert [r.id for r in store.outbox_claim(owner="s1", lease=30, limit=10)] == [r2]
    assert store.outbox_requeue([r1]) == 1
    assert [r.id for r in store.outbox_claim(owner="s2", lease=30, limit=10)] == [r1]
    clock.advance(30)   # both leases ran out: only the user's oldest row is claimable
    assert [r.id for r in store.outbox_claim(owner="s3", lease=30, limit=10)] == [r1]
    assert store.outbox_sent(r1, owner="s3") is True
    assert [r.id for r in store.outbox_claim(owner="s3", lease=30, limit=10)] == [r2]
    assert store.outbox_sent(r2, owner="s1") is False
    assert store.outbox_sent(r2, owner="s3") is True
    assert [r.id for r in store.outbox_claim(owner="s3", lease=30, limit=10)] == [r3]


def test_claims_need_a_positive_lease(store: Store) -> None:
    with pytest.raises(ValueError):
        store.outbox_claim(owner="s1", lease=0, limit=10)
    with pytest.raises(ValueError):
        take(store, "w1", lease=0, limit=10)


def test_outbox_purge_deletes_old_sent_and_dead_rows(store: Store, clock) -> None:
    ids = [enqueue(store, reply(f"o{i}", f"m{i}"))[0] for i in range(4)]
    store.outbox_claim(owner="s1", lease=30, limit=10)
    store.outbox_sent(ids[0], owner="s1")
    store.outbox_dead(ids[1], owner="s1", errcode=40003, errmsg="invalid openid")
    clock.advance(100)
    store.outbox_sent(ids[2], owner="s1")
    # ids[3] stays sending
    assert store.outbox_purge(before=clock.now) == 2
    assert outbox_row(store, ids[0]) is None and outbox_row(store, ids[1]) is None
    assert store.outbox_stats() == {"pending": 0, "sending": 1, "sent": 1, "dead": 0}
    assert [r.id for r in store.outbox_list()] == [ids[3], ids[2]]
    assert store.outbox_purge(before=clock.now + 1) == 1
    assert store.outbox_purge(before=clock.now + 1) == 0


def test_outbox_stats_has_every_state(store: Store) -> None:
    assert store.outbox_stats() == dict.fromkeys(OUTBOX_STATES, 0)
    ids = [enqueue(store, reply(f"o{i}", f"m{i}"))[0] for i in range(4)]
    store.outbox_claim(owner="s1", lease=30, limit=3)   # ids[3] stays pending
    store.outbox_sent(ids[0], owner="s1")
    store.outbox_dead(ids[1], owner="s1", errcode=None, errmsg=None)
    assert store.outbox_stats() == {"pending": 1, "sending": 1, "sent": 1, "dead": 1}


def test_backlog_counts_what_waits_and_when_the_oldest_arrived(store: Store, clock) -> None:
    assert store.backlog() == Backlog()
    start = clock()
    taken(store, entry("wx1:old", received_at=start - 50), owner="h", lease=60)
    clock.advance(5)
    ids = enqueue(store, reply("oA", "a1"), reply("oA", "a2"))   # created at start + 5
    clock.advance(5)
    (other,) = enqueue(store, reply("oB", "b1"))
    (dead,) = enqueue(store, reply("oC", "c1"))
    store.outbox_claim(owner="s", lease=30, limit=10)            # a1, b1 and c1 are sending
    store.outbox_sent(other, owner="s")
    store.outbox_dead(dead, owner="s", errcode=45015, errmsg="window closed")
    assert store.backlog() == Backlog(inbox=1, inbox_oldest=start - 50, outbox=2,
                                      outbox_oldest=start + 5, outbox_dead=1)
    store.outbox_sent(ids[0], owner="s")
    store.inbox_finish("wx1:old", [], owner="h")
    assert store.backlog() == Backlog(outbox=1, outbox_oldest=start + 5, outbox_dead=1)


def test_outbox_list_newest_first_filtered_by_state(store: Store) -> None:
    ids = [enqueue(store, reply(f"o{i}", f"m{i}"))[0] for i in range(4)]
    store.outbox_claim(owner="s1", lease=30, limit=2)
    store.outbox_sent(ids[0], owner="s1")
    assert [r.id for r in store.outbox_list()] == ids[::-1]
    assert [r.id for r in store.outbox_list(limit=2)] == [ids[3], ids[2]]
    assert [r.id for r in store.outbox_list(state="pending")] == [ids[3], ids[2]]
    assert [r.id for r in store.outbox_list(state="sending")] == [ids[1]]
    assert [(r.id, r.state) for r in store.outbox_list(state="sent")] == [(ids[0], "sent")]
    assert store.outbox_list(state="dead") == []
    assert store.outbox_list(limit=0) == []


def test_outbox_rows_round_trip_text_exactly(store: Store) -> None:
    body = '{"msgtype":"text","text":{"content":"你好 | ]]> \\n"}}'
    (r1,) = enqueue(store, reply("o-_x", body, appid="wxabc", rule="规则:1"))
    row = outbox_row(store, r1)
    assert (row.appid, row.openid, row.body, row.rule) == ("wxabc", "o-_x", body, "规则:1")
    assert not store.outbox_sent("not-an-id", owner="s1")


# -- several processes ----------------------------------------------------------------------
# Each worker process opens its own store on the shared database, waits for the start file,
# then races the others: take one lock, record one push, drain the outbox.
WORKER = r"""
import json, os, sys, time
from webhook.store.base import InboxEntry
from webhook.store.redis import RedisStore
from webhook.store.sqlite import SqliteStore

url, prefix, name, go = sys.argv[1:5]
store = (RedisStore.from_url(url, prefix=prefix) if url.startswith("redis://")
         else SqliteStore.from_url(url))
open(go + "." + name, "w").close()   # ready
while not os.path.exists(go):
    time.sleep(0.001)
out = {"lock": store.acquire("refresh:wx1", name, lease=60)}
out["answer"] = store.inbox_record(
    InboxEntry(key="wx1:42", appid="wx1", format="xml", payload="<xml/>", answer=name,
               received_at=time.time()), ttl=600)
claims, idle = [], 0
while idle < 50:
    rows = store.outbox_claim(owner=name, lease=60, limit=3)
    idle = 0 if rows else idle + 1
    for row in rows:
        claims.append((time.monotonic_ns(), row.id, row.openid))
        time.sleep(0.001)   # the send
        assert store.outbox_sent(row.id, owner=name), row
    if not rows:
        time.sleep(0.002)
out["claims"] = claims
store.close()
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_processes_race_for_lock_inbox_and_outbox(backend: str, request, tmp_path) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'mp.db'}"
        parent = open_store(url)
    else:
        url = request.getfixturevalue("redis_server").url
        parent = RedisStore.from_url(url, prefix=prefix)
    users = [f"o{i}" for i in range(20)]
    ids = [row_id for n in range(5)
           for row_id in enqueue(parent, *(reply(u, f"{u}-{n}") for u in users), key=f"wx1:{n}")]
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, prefix, f"p{i}", str(go)],
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"go.p{i}").exists() for i in range(4)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.005)
        go.touch()
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [0] * 4
    results = [json.loads(o) for o in outs]
    assert sum(r["lock"] for r in results) == 1
    [first] = take(parent, "h")                      # one push, whoever recorded it first
    assert first.answer in {f"p{i}" for i in range(4)}
    retry = InboxEntry(key="wx1:42", appid="wx1", format="xml", payload="<xml/>",
                       answer="retry", received_at=time.time())
    assert parent.inbox_record(retry, ttl=600) == first.answer
    claims = [c for r in results for c in r["claims"]]
    assert sorted(row_id for _, row_id, _ in claims) == sorted(ids)   # each row exactly once
    for user in users:   # and each user's rows in enqueue order
        mine = [int(row_id) for _, row_id, openid in sorted(claims) if openid == user]
        assert mine == sorted(mine)
    assert sum(1 for r in results if r["claims"]) >= 2   # the race really happened
    assert parent.outbox_stats() == {"pending": 0, "sending": 0, "sent": len(ids), "dead": 0}
    if isinstance(parent, RedisStore):
        parent.client.delete(*parent.client.keys(prefix + "*"))
    parent.close()


def test_outbox_add_queues_replies_that_answer_no_push(store: Store) -> None:
    (first,) = enqueue(store, reply("oA", "bot"))
    rows = store.outbox_add([reply("oA", "operator", rule="console:ana"), reply("oB", "b")])
    assert [(r.openid, r.body, r.rule, r.state) for r in rows] == [
        ("oA", "operator", "console:ana", "pending"), ("oB", "b", "faq", "pending")]
    assert store.outbox_add([]) == []
    claimed = store.outbox_claim(owner="s", lease=30, limit=10)
    assert [r.id for r in claimed] == [first, rows[1].id]   # after the user's earlier reply
    assert store.outbox_sent(first, owner="s") is True
    assert [r.id for r in store.outbox_claim(owner="s", lease=30, limit=10)] == [rows[0].id]


# -- history --------------------------------------------------------------------------------
def said(item: str, at: float, text: str = "hi") -> HistoryItem:
    return HistoryItem(item=item, at=at, direction="in", body=json.dumps({"text": text}))


def note(store: Store, appid: str, openid: str, items: list[HistoryItem], **options) -> None:
    store.history_add([HistoryNote(appid, openid, items, **options)])


def sent(row_id: str, at: float, state: str = "queued", **error) -> HistoryItem:
    return HistoryItem(item=f"reply:{row_id}", at=at, direction="out", body='{"msgtype":"text"}',
                       rule="faq", state=state, **error)


def test_history_keeps_a_timeline_in_order_and_updates_a_reply_in_place(store: Store,
                                                                       clock) -> None:
    note(store, "wx1", "oA", [said("msg:1", 100.0, "几点开门 <b>"), sent("7", 100.5)],
                      preview="几点开门 <b>")
    note(store, "wx1", "oA", [said("msg:2", 200.0)])
    note(store, "wx1", "oA", [sent("7", 999.0, "dead", errcode=45015, errmsg="out of time")])
    timeline = store.history_timeline("wx1", "oA")
    assert [(i.item, i.at, i.direction) for i in timeline] == [
        ("msg:1", 100.0, "in"), ("reply:7", 100.5, "out"), ("msg:2", 200.0, "in")]
    assert json.loads(timeline[0].body) == {"text": "几点开门 <b>"}
    assert (timeline[1].state, timeline[1].errcode, timeline[1].errmsg, timeline[1].rule) == (
        "dead", 45015, "out of time", "faq")
    note(store, "wx1", "oA", [sent("7", 1.0, "sent")])   # retried: the error is gone
    again = store.history_timeline("wx1", "oA")[1]
    assert (again.at, again.state, again.errcode, again.errmsg) == (100.5, "sent", None, None)
    assert [i.item for i in store.history_timeline("wx1", "oA", limit=2)] == ["reply:7", "msg:2"]
    assert store.history_timeline("wx1", "nobody") == []


def test_history_notes_of_one_write_apply_in_turn(store: Store) -> None:
    store.history_add([HistoryNote("wx1", "oA", [said("msg:1", 1.0), sent("1", 1.5)],
                                   preview="hi", flag="no rule matched"),
                       HistoryNote("wx1", "oB", [said("msg:1", 2.0)]),
                       HistoryNote("wx1", "oA", [sent("1", 9.0, "sent")])])
    store.history_add([])
    assert [(i.item, i.at, i.state) for i in store.history_timeline("wx1", "oA")] == [
        ("msg:1", 1.0, ""), ("reply:1", 1.5, "sent")]
    assert store.history_conversation("wx1", "oA").flag == "no rule matched"
    assert [i.item for i in store.history_timeline("wx1", "oB")] == ["msg:1"]


def test_history_lists_conversations_by_last_activity_per_app(store: Store, clock) -> None:
    for openid, appid in (("oA", "wx1"), ("oB", "wx1"), ("oC", "wx2")):
        note(store, appid, openid, [said("msg:1", clock())], preview=f"from {openid}")
        clock.advance(10)
    note(store, "wx1", "oA", [sent("1", clock())])   # activity without a new preview
    listed = store.history_conversations()
    assert [(c.appid, c.openid) for c in listed] == [("wx1", "oA"), ("wx2", "oC"), ("wx1", "oB")]
    assert listed[0].preview == "from oA" and listed[0].last_at == clock()
    assert [c.openid for c in store.history_conversations(appids=["wx1"])] == ["oA", "oB"]
    assert [c.openid for c in store.history_conversations(appids=["wx1"], limit=1)] == ["oA"]
    assert store.history_conversations(appids=[]) == []
    assert store.history_conversation("wx2", "oC").preview == "from oC"
    assert store.history_conversation("wx2", "oA") is None


def test_history_flags_a_conversation_until_it_is_handled(store: Store, clock) -> None:
    note(store, "wx1", "oA", [said("msg:1", 1.0)])
    note(store, "wx1", "oB", [said("msg:1", 1.0)], flag="hand-off rule fired")
    first_flag = clock()
    clock.advance(5)
    note(store, "wx1", "oB", [sent("1", 2.0, "dead")], flag="reply dead")
    clock.advance(1)
    note(store, "wx2", "oC", [said("msg:1", 1.0)], flag="no rule matched")
    flagged = store.history_conversations(flagged=True)
    assert [(c.openid, c.flag) for c in flagged] == [("oC", "no rule matched"), ("oB", "reply dead")]
    assert flagged[1].flagged_at == first_flag   # flagged since the first mark
    assert [c.openid for c in store.history_conversations(appids=["wx1"], flagged=True)] == ["oB"]
    assert store.history_conversation("wx1", "oA").flag is None
    assert store.history_handled("wx1", "oB") is True
    assert store.history_handled("wx1", "oB") is False
    assert store.history_conversation("wx1", "oB").flag is None
    assert [c.openid for c in store.history_conversations(flagged=True)] == ["oC"]
    note(store, "wx1", "oB", [said("msg:2", 3.0)])   # no flag: stays handled
    assert store.history_conversation("wx1", "oB").flagged_at is None


def test_history_purge_forgets_what_was_last_noted_before(store: Store, clock) -> None:
    note(store, "wx1", "old", [said("msg:1", 1.0)], flag="no rule matched")
    note(store, "wx1", "both", [said("msg:1", 1.0), sent("1", 1.0)])
    clock.advance(100)
    cut = clock()
    note(store, "wx1", "both", [said("msg:2", 2.0), sent("1", 1.0, "sent")])
    assert store.history_purge(before=cut) == 2   # old's message and both's first one
    assert store.history_conversation("wx1", "old") is None
    assert store.history_conversations(flagged=True) == []
    assert [i.item for i in store.history_timeline("wx1", "both")] == ["reply:1", "msg:2"]
    assert store.history_purge(before=cut) == 0
    clock.advance(1)
    assert store.history_purge(before=clock()) == 2
    assert store.history_conversations() == []


def test_tallies_count_per_day_and_rank_the_most_counted(store: Store) -> None:
    store.tally_add({("rule", 100, "hours"): 1, ("rule", 100, "order"): 1})
    store.tally_add({("rule", 101, "hours"): 1})
    store.tally_add({("rule", 102, "order"): 2, ("unmatched", 102, "你好"): 1})
    store.tally_add({})
    assert store.tally_top("rule", since=100) == [("order", 3), ("hours", 2)]
    assert store.tally_top("rule", since=101) == [("order", 2), ("hours", 1)]
    assert store.tally_top("rule", since=100, limit=1) == [("order", 3)]
    assert store.tally_top("unmatched", since=0) == [("你好", 1)]
    assert store.tally_top("other", since=0) == []
    assert store.tally_purge(before=102) == 3   # (rule, hours, 100), (rule, order, 100), day 101
    assert store.tally_top("rule", since=0) == [("order", 2)]
    assert store.tally_purge(before=102) == 0


# -- backend specifics ----------------------------------------------------------------------
def test_sqlite_sweeps_expired_rows_now_and_then(tmp_path, clock) -> None:
    store = SqliteStore(str(tmp_path / "sweep.db"), clock=clock)
    store.put("old", "v", ttl=1)
    taken(store, entry("wx1:old"), lease=1, ttl=1)   # first sweep: nothing due
    clock.advance(61)
    taken(store, entry("wx1:new"), lease=1, ttl=600)  # next sweep
    with sqlite3.connect(tmp_path / "sweep.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM kv WHERE key = 'old'").fetchone() == (0,)
        assert conn.execute("SELECT key FROM inbox").fetchall() == [("wx1:new",)]
    conn.close()
    store.close()


def test_sqlite_a_retry_recorded_before_its_first_delivery_was_taken_is_dropped_then(
        tmp_path, caplog) -> None:
    """The one case where a retry is not answered from the inbox: both are in the journal,
    each with the answer its own routing gave; one is taken, the other dropped, logged."""
    store = SqliteStore(str(tmp_path / "early.db"))
    assert store.inbox_record(entry(answer="first"), ttl=600) is None
    assert store.inbox_record(entry(answer="second"), ttl=600) is None   # not found yet
    with caplog.at_level(logging.INFO, logger="webhook.store"):
        assert [e.answer for e in take(store, "w1")] == ["first"]
    assert "push duplicate appid=wx1 key=1001 state=pending" in caplog.text
    assert store.inbox_record(entry(answer="third"), ttl=600) == "first"
    assert store.inbox_stats() == {"pending": 1, "dead": 0}
    store.close()


def test_sqlite_refuses_an_in_memory_database() -> None:
    """The request workers and the delivery process share the store: it must be a file."""
    with pytest.raises(StoreError, match="sqlite:///path.db"):
        SqliteStore.from_url("sqlite:///:memory:")


def test_sqlite_a_failing_write_fails_alone_among_concurrent_ones(tmp_path) -> None:
    """Writes of one process share transactions; one raising must not undo or fail others."""
    store = SqliteStore(str(tmp_path / "group.db"))
    errors: list[Exception] = []

    def bump(n: int) -> str:
        if n % 3 == 0:
            raise ValueError(f"refused {n}")
        return str(n)

    def work(worker: int) -> None:
        for i in range(60):
            n = worker * 1000 + i
            try:
                store.update(f"k{n}", lambda old, n=n: bump(n))
            except ValueError as exc:
                errors.append(exc)
            store.acquire(f"lock{n}", "w", lease=30)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = [w * 1000 + i for w in range(8) for i in range(60)]
    assert sorted(str(e) for e in errors) == sorted(f"refused {n}" for n in numbers if n % 3 == 0)
    for n in numbers:
        assert store.get(f"k{n}") == (None if n % 3 == 0 else str(n))
        assert not store.acquire(f"lock{n}", "another", lease=30)
    store.close()


def test_sqlite_processes_take_turns_on_the_host_lock(tmp_path) -> None:
    """Writers wait for the flock beside the file, tried every few ms, not in SQLite's
    sleeps."""
    import fcntl

    store = SqliteStore(str(tmp_path / "turns.db"))
    done = threading.Event()
    with open(tmp_path / "turns.db-wxpush.lock", "a+") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        writer = threading.Thread(target=lambda: (store.put("k", "v"), done.set()))
        writer.start()
        assert not done.wait(0.3)
        fcntl.flock(other_process, fcntl.LOCK_UN)
    assert done.wait(5)
    writer.join()
    assert store.get("k") == "v"
    store.close()


def test_sqlite_writes_give_up_when_a_frozen_process_holds_the_turn(tmp_path) -> None:
    """A process stopped while it holds the lock file (SIGSTOP, a stalled disk) costs every
    writer of every other process ``timeout`` seconds and a StoreError, not a hang: the
    request path answers 503 and its threads stay free. Reads go on meanwhile."""
    import fcntl

    store = SqliteStore(str(tmp_path / "frozen.db"), timeout=0.3)
    store.put("k", "before")
    failed: list[float] = []

    def write() -> None:
        started = time.monotonic()
        with pytest.raises(StoreError, match="no write turn within 0.3 s"):
            store.put("k", "during")
        failed.append(time.monotonic() - started)

    with open(tmp_path / "frozen.db-wxpush.lock", "a+") as frozen:
        fcntl.flock(frozen, fcntl.LOCK_EX)
        writers = [threading.Thread(target=write) for _ in range(8)]
        for writer in writers:          # one leads the group commit, the rest queue behind
            writer.start()
            time.sleep(0.05)
        for writer in writers:
            writer.join(5)
        assert store.get("k") == "before"
    # The first waited the whole timeout; those queued behind it give up with it, no later.
    assert len(failed) == 8 and 0.3 <= max(failed) < 0.8, failed
    store.put("k", "after")              # the turn is free again
    assert store.get("k") == "after"
    store.close()


def test_sqlite_waits_inside_sqlite_are_bounded_too(tmp_path) -> None:
    """A writer that does not take the lock file (the sqlite3 shell, a stopped checkpoint)
    holds SQLite's own lock: SQLite's busy wait ends at the store's timeout as well."""
    store = SqliteStore(str(tmp_path / "shell.db"), timeout=0.3)
    shell = sqlite3.connect(tmp_path / "shell.db", isolation_level=None)
    shell.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreError, match="locked"):
        store.put("k", "v")
    assert time.monotonic() - started < 1.0
    shell.execute("ROLLBACK")
    shell.close()
    store.close()


def test_sqlite_checkpoints_the_wal_into_the_database_file(tmp_path) -> None:
    """Checkpoints run outside the write turn, but they run: the main file keeps up."""
    import shutil

    from webhook.store.sqlite_writes import CHECKPOINT_EVERY

    store = SqliteStore(str(tmp_path / "wal.db"))
    for i in range(2 * CHECKPOINT_EVERY):
        store.put(f"k{i}", "v")
    shutil.copy(tmp_path / "wal.db", tmp_path / "main-only.db")   # without the -wal file
    with sqlite3.connect(tmp_path / "main-only.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM kv").fetchone()[0] >= CHECKPOINT_EVERY
    conn.close()
    store.close()


def test_sqlite_wal_stays_bounded_while_readers_never_pause(tmp_path) -> None:
    """Under steady load some reader always needs the newest frames, so a PASSIVE checkpoint
    never lets the WAL start over: unbounded, it grows by every write (here past 100 MiB) and
    keeps its size after the load is gone. Bounded, it is emptied at a checkpoint past the
    limit, or at one of the next few when readers were in the way."""
    from webhook.store.sqlite_writes import CHECKPOINT_EVERY

    path = tmp_path / "busy.db"
    store = SqliteStore(str(path), wal_limit=1 << 20)
    stop = threading.Event()

    def read(pause: float) -> None:   # overlapping snapshots: some read is always open
        conn = sqlite3.connect(path, isolation_level=None, timeout=5)
        while not stop.is_set():
            conn.execute("BEGIN")
            conn.execute("SELECT COUNT(*) FROM kv").fetchone()
            time.sleep(pause)
            conn.execute("COMMIT")
        conn.close()

    readers = [threading.Thread(target=read, args=(p,)) for p in (0.001, 0.0013)]
    for r in readers:
        r.start()
    largest = 0
    try:
        for i in range(24 * CHECKPOINT_EVERY):
            store.put(f"k{i}", "v" * 2000)
            largest = max(largest, os.path.getsize(f"{path}-wal"))
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert largest < 64 << 20, f"WAL grew to {largest >> 20} MiB"   # unbounded: past 100
    assert store.get(f"k{24 * CHECKPOINT_EVERY - 1}") == "v" * 2000
    store.close()


def test_sqlite_from_url_names_a_missing_directory(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/nope/wxpush.db"
    with pytest.raises(StoreError, match="nope.*does not exist") as info:
        open_store(url)
    assert url in str(info.value)


def _unused_port() -> int:
    with socket.socket() as sock:   # nothing listens on it once the socket is closed
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redis_from_url_masks_the_password_when_unreachable() -> None:
    port = _unused_port()
    url = f"redis://user:s3cret@127.0.0.1:{port}/0"
    with pytest.raises(StoreError) as info:
        open_store(url)
    assert "s3cret" not in str(info.value)
    assert f"redis://user:***@127.0.0.1:{port}/0" in str(info.value)


def test_redis_store_needs_a_decoding_client(redis_server) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(client)
    client.close()


def test_redis_errors_become_store_errors() -> None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{_unused_port()}/0", decode_responses=True)
    store = RedisStore(client)
    with pytest.raises(StoreError, match="redis store"):
        store.get("k")
    store.close()


def test_redis_calls_give_up_after_the_timeout_when_redis_does_not_answer(redis_server) -> None:
    """redis-py waited 10 s for an answer; a request path waits at most the timeout."""
    store = RedisStore.from_url(redis_server.url, prefix=f"test:{uuid.uuid4().hex}:",
                                timeout=0.3)
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="redis store: TimeoutError"):
            store.put("k", "v")
        spent = time.monotonic() - started
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    assert spent < 1.0
    store.close()


def test_redis_keeps_data_only_with_appendonly_or_snapshots(redis_server) -> None:
    store = RedisStore.from_url(redis_server.url)
    admin = redis_server.client()
    assert store.keeps_data() is False                 # the tests' Redis: --save "" --appendonly no
    try:
        admin.config_set("save", "3600 1")
        assert store.keeps_data() is True
        admin.config_set("save", "")
        admin.config_set("appendonly", "yes")
        assert store.keeps_data() is True
    finally:
        admin.config_set("appendonly", "no")
        admin.config_set("save", "")
    user = f"limited-{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"],
                      commands=["+@all", "-config"])
    try:                                                 # a managed Redis: no CONFIG
        limited = RedisStore.from_url(f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0")
        assert limited.keeps_data() is None
        limited.close()
    finally:
        admin.acl_deluser(user)
    admin.close()
    store.close()


def test_a_server_refuses_a_redis_that_keeps_nothing_unless_allowed(redis_server, caplog,
                                                                   tmp_path) -> None:
    from webhook.store import require_durable

    store = RedisStore.from_url(redis_server.url)
    url = f"redis://:hunter2@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(StoreError, match="keeps nothing across a restart") as refused:
        require_durable(store, url, allow_volatile=False)
    assert "appendonly yes" in str(refused.value) and "hunter2" not in str(refused.value)
    assert "\n" not in str(refused.value)
    with caplog.at_level(logging.WARNING, logger="webhook.store"):
        require_durable(store, url, allow_volatile=True)
    assert "keeps nothing across a restart" in caplog.text and "running anyway" in caplog.text
    sqlite_store = SqliteStore(str(tmp_path / "durable.db"))
    require_durable(sqlite_store, "sqlite:///durable.db", allow_volatile=False)
    sqlite_store.close()
    store.close()


def test_redis_keys_carry_a_redis_ttl_too(redis_server, clock) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=f"test:{uuid.uuid4().hex}:", clock=clock)
    store.put("k", "v", ttl=60)
    store.acquire("L", "a", lease=30)
    store.inbox_record(entry(), ttl=600)
    ttls = [store.client.pttl(store.prefix + name) for name in ("v:k", "lock:L", "in:wx1:1001")]
    assert 0 < ttls[0] <= 60_000 and 0 < ttls[1] <= 30_000 and 0 < ttls[2] <= 600_000
    store.client.delete(*store.client.keys(store.prefix + "*"))
    store.close()


def test_outbox_get_reads_one_row_by_its_id(store: Store) -> None:
    (row_id,) = enqueue(store, reply("oA", "hello"))
    row = store.outbox_get(row_id)
    assert row is not None and (row.id, row.openid, row.body, row.state) == (
        row_id, "oA", "hello", "pending")
    assert store.outbox_get("999999") is None and store.outbox_get("not-an-id") is None
