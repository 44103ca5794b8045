"""Following the replies to one push (``wxpush push``): in the store, at the emulator, and
for how long."""

from __future__ import annotations

import requests

from webhook.cli.replies import EmulatorReplies, Fate, StoreReplies, follow
from webhook.store import InboxEntry, NewReply
from webhook.testing import Emulator, EmulatorControl, FakeClock, serve

TEXT = '{"msgtype": "text", "text": {"content": "9:00–18:00"}}'


def test_the_store_shows_the_customers_new_rows_as_they_settle(tmp_path):
    from webhook.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "w.db"))
    store.inbox_add(InboxEntry(key="wx1:1", appid="wx1", format="xml", payload="<xml/>",
                               answer="success", received_at=0), owner="t", lease=30, ttl=60)
    store.inbox_finish("wx1:1", [NewReply("wx1", "o1", TEXT, "old")], owner="t")
    (old,) = store.outbox_claim(owner="t", lease=30, limit=10)
    store.outbox_sent(old.id, owner="t")
    replies = StoreReplies(store, "wx1", "o1")
    assert replies() == []                                    # there before the push
    store.inbox_add(InboxEntry(key="wx1:2", appid="wx1", format="xml", payload="<xml/>",
                               answer="success", received_at=0), owner="t", lease=30, ttl=60)
    new = store.inbox_finish("wx1:2", [NewReply("wx1", "o1", TEXT, "hours"),
                                       NewReply("wx1", "o2", TEXT, "hours"),
                                       NewReply("wx1", "o1", TEXT, "more")], owner="t")
    assert [(f.state, f.text) for f in replies()] == [("pending", "text 9:00–18:00")] * 2
    assert new[0].id in [row.id for row in store.outbox_claim(owner="t", lease=30, limit=10)]
    store.outbox_dead(new[0].id, owner="t", errcode=40003, errmsg="invalid openid")
    assert replies()[0] == Fate(f"reply {new[0].id}", "dead", 40003, "invalid openid",
                                "text 9:00–18:00")
    store.close()


def test_the_emulator_shows_the_sends_to_the_customer():
    emulator = Emulator()
    emulator.register_app("wx1", "s")
    with serve(emulator.app) as upstream, EmulatorControl(upstream.url) as control:
        replies = EmulatorReplies(control, "wx1", "o_cli")
        token = requests.get(f"{upstream.url}/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": "wx1", "secret": "s"},
            timeout=5).json()["access_token"]

        def send(touser: str) -> None:
            requests.post(f"{upstream.url}/cgi-bin/message/custom/send",
                          params={"access_token": token}, timeout=5,
                          json={"touser": touser, "msgtype": "text",
                                "text": {"content": "hi"}})
        send("o_cli")                                      # never wrote: 40003
        emulator.notify_push("wx1", {"FromUserName": "o_cli", "MsgType": "text",
                                     "CreateTime": int(emulator.now())})
        send("o_other")
        send("o_cli")
        assert [(f.state, f.errcode, f.text) for f in replies()] == [
            ("dead", 40003, "text hi"), ("sent", None, "text hi")]


def test_follow_waits_for_every_reply_to_settle_or_the_time():
    clock = FakeClock()
    start = clock()
    seen = [[], [Fate("reply 1", "sending")], [Fate("reply 1", "sent")]]

    def replies() -> list[Fate]:
        return seen[0] if len(seen) == 1 else seen.pop(0)
    assert follow(replies, wait=5, clock=clock, sleep=clock.advance) == [Fate("reply 1", "sent")]
    assert clock() - start < 1                             # settled: not waited out
    clock = FakeClock()
    stuck = [Fate("reply 2", "pending", -1, "system busy")]
    assert follow(lambda: stuck, wait=5, clock=clock, sleep=clock.advance) == stuck
    clock = FakeClock()
    assert follow(lambda: [], wait=5, clock=clock, sleep=clock.advance) == []
