"""What the console will show, noted by the Responder and the Sender on a real store: each
customer message and reply in its conversation, the needs-a-human flags, the daily tallies,
and nothing at all (but rule hits) with history_days = 0."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from webhook import TEXT, Router, TextReply, keyword
from webhook.delivery.handling import Responder
from webhook.delivery.history import DEAD, FAILED, HANDOFF, UNMATCHED, History, day_of
from webhook.delivery.sender import Sender
from webhook.errors import Permanent, StoreError
from webhook.push.parsing import message_fields, render
from webhook.store import InboxEntry, Store
from webhook.testing.factories import make_enter_session, make_image, make_text

APPID = "wx0123456789abcdef"


def router() -> Router:
    bot = Router(name="bot")

    @bot.text(keyword("几点"), name="hours")
    def hours(message, ctx):
        return TextReply("9:00-18:00")

    @bot.text(keyword("坏"), name="broken")
    def broken(message, ctx):
        raise RuntimeError("handler bug")

    bot.add(keyword("人工"), name="human", transfer=True)

    @bot.fallback(TEXT, name="fallback")
    def fallback(message, ctx):
        return TextReply("没听懂")

    @bot.enter_session(name="welcome")
    def welcome(message, ctx):
        return TextReply("您好")

    bot.compile()
    return bot


def handle(store: Store, history: History, message) -> None:
    key = f"{APPID}:{message.dedupe_key}"
    entry = InboxEntry(key=key, appid=APPID, format="xml",
                       payload=render(message_fields(message), "xml"), answer="success",
                       received_at=store.clock())
    assert store.inbox_record(entry, ttl=600) is None
    [taken] = store.inbox_take(owner="w", lease=30, limit=1, max_attempts=5)
    bot = router()
    Responder(store=store, router=lambda: bot, owner="w", clock=store.clock, budget=3,
              history=history).respond(taken)


def test_a_conversation_is_noted_with_its_replies_and_tallies(store, clock):
    history = History(store, days=7, clock=clock)
    handle(store, history, make_enter_session(openid="oA"))
    clock.advance(1)
    handle(store, history, make_text("几点开门 <img src=x onerror=alert(1)>", openid="oA"))
    clock.advance(1)
    handle(store, history, make_image("MEDIA", openid="oA"))
    timeline = store.history_timeline(APPID, "oA")
    assert [(i.direction, json.loads(i.body).get("type", "reply"), i.rule, i.state)
            for i in timeline] == [
        ("in", "enter", "welcome", ""), ("out", "reply", "welcome", "queued"),
        ("in", "text", "hours", ""), ("out", "reply", "hours", "queued"),
        ("in", "image", "", "")]
    assert json.loads(timeline[2].body)["text"] == "几点开门 <img src=x onerror=alert(1)>"
    assert json.loads(timeline[3].body) == {"msgtype": "text", "text": {"content": "9:00-18:00"}}
    assert json.loads(timeline[4].body) == {"type": "image", "media_id": "MEDIA"}
    (conversation,) = store.history_conversations()
    assert json.loads(conversation.preview)["type"] == "image"
    # an image no rule takes (the fallback answers text only) is unmatched
    assert conversation.flag == UNMATCHED
    assert store.tally_top("rule", since=day_of(clock())) == [("hours", 1), ("welcome", 1)]
    assert store.tally_top("unmatched", since=0) == []   # only texts are counted


@pytest.mark.parametrize("text, flag", [("转人工", HANDOFF), ("你好", UNMATCHED),
                                        ("坏了", FAILED), ("几点", None)])
def test_what_needs_a_human_is_flagged(store, clock, text, flag):
    history = History(store, days=7, clock=clock)
    handle(store, history, make_text(text, openid="oB"))
    assert store.history_conversation(APPID, "oB").flag == flag
    unmatched = store.tally_top("unmatched", since=day_of(clock()))
    assert unmatched == ([(text, 1)] if flag == UNMATCHED else [])


class Refusing:
    def send(self, appid, openid, payload):
        raise Permanent(45015, "response out of time limit")


def test_a_reply_that_goes_dead_is_noted_and_flagged(store, clock):
    history = History(store, days=7, clock=clock)
    handle(store, history, make_text("几点", openid="oC"))
    sender = Sender(store=store, api=Refusing(), owner="s", clock=clock, rng=random.Random(1),
                    lease=30, max_attempts=3, history=history)
    assert sender.run_once() == 1
    reply = store.history_timeline(APPID, "oC")[-1]
    assert (reply.state, reply.errcode, reply.errmsg) == (
        "dead", 45015, "response out of time limit")
    assert store.history_conversation(APPID, "oC").flag == DEAD


def test_history_days_0_keeps_no_customer_text(store, clock):
    history = History(store, days=0, clock=clock)
    handle(store, history, make_text("你好", openid="oD"))
    handle(store, history, make_text("几点", openid="oD"))
    assert store.history_conversations() == [] and store.history_timeline(APPID, "oD") == []
    assert store.tally_top("unmatched", since=0) == []
    assert store.tally_top("rule", since=0) == [("fallback", 1), ("hours", 1)]


def test_purge_keeps_the_last_days_and_a_week_of_tallies(store, clock):
    history = History(store, days=2, clock=clock)
    handle(store, history, make_text("你好", openid="old"))
    clock.advance(86400 + 1)
    handle(store, history, make_text("你好", openid="new"))
    clock.advance(86400)
    history.purge()
    assert [c.openid for c in store.history_conversations()] == ["new"]
    assert store.tally_top("unmatched", since=0) == [("你好", 2)]
    clock.advance(6 * 86400)
    history.purge()
    assert store.history_conversations() == [] and store.tally_top("rule", since=0) == []


class Broken:
    """A store whose history writes fail: the push is handled all the same."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name):
        if name.startswith(("history_", "tally_")):
            def fail(*args, **kwargs):
                raise StoreError("disk full")
            return fail
        return getattr(self._store, name)


def test_a_note_that_fails_costs_no_reply(store, clock, caplog):
    history = History(Broken(store), days=7, clock=clock)
    handle(store, history, make_text("几点", openid="oE"))
    assert [r.state for r in store.outbox_list()] == ["pending"]
    assert "history notes not noted: StoreError" in caplog.text


class Gated:
    """A store whose history writes are counted, and wait for ``gate`` once it is closed."""

    def __init__(self, store: Store) -> None:
        self._store, self.writes = store, []
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def history_add(self, notes):
        self.entered.set()
        assert self.gate.wait(10)
        self.writes.append(len(notes))
        self._store.history_add(notes)

    def __getattr__(self, name):
        return getattr(self._store, name)


@contextmanager
def writing(store: Store, clock) -> Iterator[tuple[Gated, History]]:
    """A started history whose thread is writing o0's note, held at the gate until the
    block opens it; stopped after (writing what its thread had not yet written)."""
    gated = Gated(store)
    history = History(gated, days=7, clock=clock)
    history.start()
    try:
        gated.gate.clear()
        handle(store, history, make_text("几点", openid="o0"))
        assert gated.entered.wait(10)
        yield gated, history
        gated.gate.set()
    finally:
        history.stop()


def test_started_history_writes_what_gathered_during_a_write_in_one_write(store, clock):
    with writing(store, clock) as (gated, history):
        for i in range(1, 6):
            handle(store, history, make_text("几点", openid=f"o{i}"))
        assert store.history_conversations() == []   # handed over, not written yet
    assert gated.writes == [1, 5]
    assert len(store.history_conversations()) == 6


def test_started_history_notes_everything_handed_from_many_threads(store, clock):
    gated = Gated(store)
    history = History(gated, days=7, clock=clock)
    history.start()
    try:
        workers = [threading.Thread(target=lambda n=n: [
            handle(store, history, make_text("几点", openid=f"o{n}-{i}")) for i in range(20)])
            for n in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        history.stop()
    assert len(store.history_conversations(limit=200)) == 80 and sum(gated.writes) == 80
    assert store.tally_top("rule", since=0) == [("hours", 80)]


def test_a_reply_noted_after_its_queueing_shows_its_last_state(store, clock):
    history = History(store, days=7, clock=clock)
    history.start()
    try:
        handle(store, history, make_text("几点", openid="oF"))
        sender = Sender(store=store, api=Refusing(), owner="s", clock=clock,
                        rng=random.Random(1), lease=30, max_attempts=3, history=history)
        assert sender.run_once() == 1
    finally:
        history.stop()
    assert store.history_timeline(APPID, "oF")[-1].state == "dead"


def test_the_notes_of_one_reply_in_one_write_leave_its_last_state(store, clock):
    """A reply queued and refused while the history's thread was busy: both notes go in one
    write, and the timeline shows the reply once, in its last state."""
    with writing(store, clock) as (gated, history):
        handle(store, history, make_text("几点", openid="oG"))
        sender = Sender(store=store, api=Refusing(), owner="s", clock=clock,
                        rng=random.Random(1), lease=30, max_attempts=3, history=history)
        assert sender.run_once() == 2
    assert gated.writes == [1, 3]    # oG's push with its reply queued; both replies refused
    timeline = store.history_timeline(APPID, "oG")
    assert [(i.direction, i.state) for i in timeline] == [("in", ""), ("out", "dead")]
    assert store.history_conversation(APPID, "oG").flag == DEAD
