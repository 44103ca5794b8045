"""The sender against the emulator and a real store: a reply the recorded send window says
WeChat would refuse is set aside without a call; with no window recorded, WeChat decides."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator

import pytest
import requests

from webhook.config.settings import AppConfig
from webhook.delivery.sender import Sender
from webhook.delivery.windows import WINDOW_TTL, note_message, window_key
from webhook.store import InboxEntry, NewReply, OutboxRow, Store
from webhook.testing import Emulator, serve
from webhook.wechat.api import WeChatAPI
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

APPID, SECRET = "wxsend0123456789a", "secret-send"
H = 3600


@pytest.fixture
def emulator(clock) -> Emulator:
    emu = Emulator(clock=clock)
    emu.register_app(APPID, SECRET)
    return emu


@pytest.fixture
def sender(store, emulator, clock) -> Iterator[Sender]:
    with serve(emulator.app) as running, requests.Session() as http:
        client = WeChatClient(running.url, session=http)
        tokens = TokenProvider(store, client, {APPID: AppConfig(APPID, "t", SECRET)},
                               clock=clock, sleep=clock.advance)
        yield Sender(store=store, api=WeChatAPI(client, tokens, store), owner="s",
                     clock=clock, rng=random.Random(1), lease=30, max_attempts=3)


def reply(store: Store, sender: Sender, openid: str, text: str) -> OutboxRow:
    """Queue one text reply to ``openid`` as a handler does, and let the sender take it."""
    key = f"{APPID}:{openid}:{text}"
    store.inbox_add(InboxEntry(key=key, appid=APPID, format="json", payload="{}",
                               answer="success", received_at=store.clock()),
                    owner="h", lease=10, ttl=600)
    payload = {"msgtype": "text", "text": {"content": text}}
    [row] = store.inbox_finish(key, [NewReply(APPID, openid, json.dumps(payload))], owner="h")
    assert sender.run_once() == 1
    return store.outbox_get(row.id)


def test_no_window_recorded_sends_and_wechat_decides(store, sender, emulator, clock):
    emulator.notify_push(APPID, {"FromUserName": "o-open", "MsgType": "text"})
    assert reply(store, sender, "o-open", "hi").state == "sent"
    assert store.get(window_key(APPID, "o-open")) is None      # still nothing recorded
    emulator.notify_push(APPID, {"FromUserName": "o-closed", "MsgType": "text",
                                 "CreateTime": int(clock() - 49 * H)})
    dead = reply(store, sender, "o-closed", "late")
    assert (dead.state, dead.errcode) == ("dead", 45015)      # WeChat's own answer
    assert [c.errcode for c in emulator.calls("/cgi-bin/message/custom/send")] == [0, 45015]


def test_a_window_recorded_closed_is_refused_without_a_call(store, sender, emulator, clock):
    emulator.notify_push(APPID, {"FromUserName": "o-old", "MsgType": "text"})
    store.put(window_key(APPID, "o-old"), note_message(None, clock() - 49 * H, "msg:1"),
              ttl=WINDOW_TTL)
    dead = reply(store, sender, "o-old", "late")
    assert (dead.state, dead.errcode) == ("dead", None) and "45015" in dead.errmsg
    assert emulator.calls("/cgi-bin/message/custom/send") == []


def test_each_send_is_one_line_and_a_dead_reply_a_warning_with_wechat_s_errmsg(
        store, sender, emulator, clock, caplog):
    emulator.notify_push(APPID, {"FromUserName": "o-ok", "MsgType": "text"})
    emulator.notify_push(APPID, {"FromUserName": "o-late", "MsgType": "text",
                                 "CreateTime": int(clock() - 49 * H)})
    with caplog.at_level(logging.INFO, logger="webhook.delivery.sender"):
        reply(store, sender, "o-ok", "hi")
        reply(store, sender, "o-late", "see you tomorrow")
    sent, dead = [r for r in caplog.records if r.name == "webhook.delivery.sender"]
    assert sent.levelno == logging.INFO and sent.getMessage().startswith("reply sent id=")
    assert "latency=" in sent.getMessage() and "rule=-" in sent.getMessage()
    assert dead.levelno == logging.WARNING
    assert "errcode=45015 errmsg=response out of time limit" in dead.getMessage()
    assert "tomorrow" not in caplog.text                          # never the reply's text

