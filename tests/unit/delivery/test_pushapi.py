"""ctx.wechat in the delivery process (webhook.delivery.pushapi through Responder.respond): a
handler's own sends go to the outbox with its replies in one step, once however often the
handling runs; typing, cloud calls and the customer's image reach WeChat (the emulator, on
loopback) with the app's token."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from webhook import IMAGE, TEXT, ImageMessage, Router, TextReply
from webhook.config.settings import AppConfig
from webhook.delivery.handling import Responder
from webhook.delivery.pushapi import PushAPI
from webhook.errors import StoreError
from webhook.store.base import InboxEntry
from webhook.testing import Emulator, PushBuilder, serve
from webhook.testing.emulator.cloud import DEMO_COLLECTIONS, DEMO_FUNCTIONS
from webhook.testing.factories import make_image, make_text
from webhook.wechat.api import WeChatAPI
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider
from webhook.cloudquery import collection

APPID, SECRET, ENV = "wx0123456789abcdef", "secret", "prod-1"
CUSTOMER, STAFF = "o-customer", "o-staff"
APPS = {APPID: AppConfig(appid=APPID, token="t", secret=SECRET, cloud_env=ENV)}

router = Router(name="shop")


@router.message(TEXT, name="lookup")
def lookup(message, ctx):
    ctx.wechat.typing()
    ctx.wechat.send(TextReply("正在查询…"))
    ctx.wechat.send(TextReply(f"顾客问：{message.content}"), openid=STAFF)
    order = ctx.wechat.call_function("orderStatus", {"order": message.content})
    faq = ctx.wechat.database(collection("faq").where({"key": "shipping"}).limit(1).get())
    return [TextReply(order["status"]), TextReply(faq[0]["answer"])]


@router.message(IMAGE, name="photo")
def photo(message: ImageMessage, ctx):
    return TextReply(f"收到 {len(ctx.wechat.download_media(message.media_id))} 字节")


@pytest.fixture
def world(store) -> Iterator[tuple[Emulator, WeChatAPI]]:
    emulator = Emulator(seed=2)
    emulator.register_app(APPID, SECRET)
    emulator.add_cloud_env(APPID, ENV, functions=DEMO_FUNCTIONS, collections=DEMO_COLLECTIONS)
    emulator.notify_push(APPID, {"FromUserName": CUSTOMER, "MsgType": "text"})
    with serve(emulator.app) as running, requests.Session() as session:
        client = WeChatClient(running.url, session=session)
        yield emulator, WeChatAPI(client, TokenProvider(store, client, APPS), store)


def record(store, message) -> InboxEntry:
    payload = PushBuilder(appid=APPID, token="t", mode="plaintext").build(message).body
    entry = InboxEntry(key=f"{APPID}:{message.dedupe_key}", appid=APPID, format="xml",
                       payload=payload.decode(), answer="success", received_at=time.time())
    assert store.inbox_add(entry, owner="w", lease=30, ttl=600) is None
    return entry


def queued(store) -> list[tuple[str, str]]:
    return sorted((row.openid, json.loads(row.body)["text"]["content"])
                  for row in store.outbox_list(limit=100))


def responder(store, api) -> Responder:
    return Responder(store=store, router=lambda: router, owner="w", clock=time.time, budget=3,
                     api=api)


def test_a_handler_sends_more_types_and_calls_the_cloud(store, world):
    emulator, api = world
    entry = record(store, make_text("123457", openid=CUSTOMER))
    assert responder(store, api).respond(entry) == 4
    assert queued(store) == sorted([(CUSTOMER, "正在查询…"), (STAFF, "顾客问：123457"),
                                    (CUSTOMER, "已发货"), (CUSTOMER, "满 99 元包邮，不满收 8 元运费。")])
    rows = store.outbox_list(limit=100)
    assert {row.rule for row in rows} == {"lookup"}
    first = min(rows, key=lambda row: row.id)
    assert json.loads(first.body)["text"]["content"] == "正在查询…"   # before the replies
    assert [c.body["command"] for c in emulator.calls("/cgi-bin/message/custom/business/typing")] \
        == ["Typing"]
    assert emulator.calls("/tcb/invokecloudfunction")[0].body == {"order": "123457"}
    assert responder(store, api).respond(entry) == 0                  # done: nothing again


class FailingFinish:
    """The store, whose first inbox_finish fails (a disk that filled for a moment)."""

    def __init__(self, inner) -> None:
        self.inner, self.failed = inner, False

    def inbox_finish(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise StoreError("database or disk is full")
        return self.inner.inbox_finish(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_handling_tried_again_queues_the_handlers_sends_once(store, world):
    emulator, api = world
    entry = record(store, make_text("123457", openid=CUSTOMER))
    flaky = FailingFinish(store)
    with pytest.raises(StoreError):
        responder(flaky, api).respond(entry)
    assert queued(store) == []
    assert responder(flaky, api).respond(entry) == 4
    assert len(queued(store)) == 4


def test_the_customers_image_is_downloaded_by_its_media_id(store, world):
    emulator, api = world
    media_id = emulator.customer_image(APPID, b"\xff\xd8" + b"\x00" * 98)
    entry = record(store, make_image(media_id, openid=CUSTOMER))
    assert responder(store, api).respond(entry) == 1
    assert queued(store) == [(CUSTOMER, "收到 100 字节")]


def test_send_takes_replies_only(world):
    _, api = world
    wechat = PushAPI(api, appid=APPID, openid=CUSTOMER)
    with pytest.raises(TypeError):
        wechat.send("hello")   # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wechat.send(TextReply("x"), openid="")
    assert wechat.queued == []
