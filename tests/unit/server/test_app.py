"""The whole request path through falcon.testing: all six console settings, every bad input,
the passive hand-off, dedupe, and, with the delivery process's work running beside it, a
keyword rule's answer reaching the emulator."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import falcon.testing
import pytest
import requests

from handlers import build_router
from webhook.config.settings import AppConfig, ServerConfig, Settings
from webhook.server.app import create_app, create_background
from webhook.store.base import InboxEntry
from webhook.store.redis import RedisStore
from webhook.store.sqlite import SqliteStore
from webhook.testing import Emulator, PushBuilder, serve
from webhook.testing.factories import make_enter_session, make_text
from webhook.wechat.api import WeChatAPI
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

APPID = "wxba5fad812f8e6fb9"
TOKEN = "AAAAA"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SECRET = "app-secret-value"
RULES = """
[[rule]]
name = "hours"
keywords = ["营业时间"]
reply.text = "9:00–18:00"

[[rule]]
name = "human"
keywords = ["人工"]
transfer = true
"""


@pytest.fixture(scope="module")
def emulator():
    emu = Emulator()
    emu.register_app(APPID, SECRET)
    server = serve(emu.app)
    yield emu, server.url
    server.stop()


def build(tmp_path: Path, emulator, *, mode="safe", fmt="xml", rules=RULES, **server):
    (tmp_path / "rules.toml").write_text(rules, encoding="utf-8")
    settings = make_settings(tmp_path, emulator, mode=mode, fmt=fmt, **server)
    store, api = store_and_api(tmp_path, settings)
    app = create_app(settings, store=store, api=api, router=build_router(settings.server.rules),
                     rng=random.Random(1))
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=KEY, format=fmt, mode=mode)
    return app, falcon.testing.TestClient(app), builder


@contextmanager
def delivering(tmp_path: Path, emulator):
    """The delivery process's work, on a store of its own over the same file."""
    settings = make_settings(tmp_path, emulator)
    store, api = store_and_api(tmp_path, settings)
    background = create_background(settings, store=store, api=api,
                                   router=build_router(settings.server.rules))
    background.start()
    try:
        yield store
    finally:
        background.stop()
        store.close()


def make_settings(tmp_path: Path, emulator, *, mode="safe", fmt="xml", **server) -> Settings:
    return Settings(
        server=ServerConfig(api_base=emulator[1], rules=str(tmp_path / "rules.toml"), **server),
        apps={APPID: AppConfig(appid=APPID, token=TOKEN, secret=SECRET, encoding_aes_key=KEY,
                               format=fmt, mode=mode)})


def store_and_api(tmp_path: Path, settings: Settings) -> tuple[SqliteStore, WeChatAPI]:
    store = SqliteStore(str(tmp_path / "wxpush.db"))
    client = WeChatClient(settings.server.api_base, session=requests.Session())
    return store, WeChatAPI(client, TokenProvider(store, client, settings.apps), store)


def wait_for_reply(emu: Emulator, openid: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not [s for s in emu.sent(APPID) if s[1] == openid]:
        assert time.monotonic() < deadline, "no reply reached the emulator"
        time.sleep(0.02)


def post(client, push, appid=APPID, **kwargs):
    return client.simulate_post(f"/wechat/{appid}", params=push.query, body=push.body, **kwargs)


@pytest.mark.parametrize("mode", ["plaintext", "compatible", "safe"])
@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_every_console_setting_is_accepted(tmp_path, emulator, mode, fmt):
    app, client, builder = build(tmp_path, emulator, mode=mode, fmt=fmt)
    result = post(client, builder.build(make_text("hello", msg_id=101)))
    assert (result.status_code, result.text) == (200, "success")
    assert result.headers["content-type"].startswith("text/plain")
    assert post(client, builder.build(make_text("hello", msg_id=101))).text == "success"


def test_url_verification_echoes_echostr(tmp_path, emulator):
    _, client, builder = build(tmp_path, emulator)
    result = client.simulate_get(f"/wechat/{APPID}", params=builder.url_verification("4375120948345356249"))
    assert (result.status_code, result.text) == (200, "4375120948345356249")


def test_official_get_vector(tmp_path, emulator):
    _, client, _ = build(tmp_path, emulator, timestamp_tolerance=0)
    result = client.simulate_get(f"/wechat/{APPID}", params={
        "signature": "f464b24fc39322e44b38aa78f5edd27bd1441696", "echostr": "4375120948345356249",
        "timestamp": "1714036504", "nonce": "1514711492"})
    assert (result.status_code, result.text) == (200, "4375120948345356249")


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_hand_off_is_answered_passively_and_encrypted(tmp_path, emulator, fmt):
    _, client, builder = build(tmp_path, emulator, fmt=fmt)
    push = builder.build(make_text("转人工", msg_id=555, from_user="o-hand"))
    first = post(client, push)
    assert first.status_code == 200 and first.text != "success"
    reply = builder.open_reply(first.content)
    assert reply["MsgType"] == "transfer_customer_service"
    assert reply["ToUserName"] == "o-hand"
    # A retry before the first was taken from the journal: sealed afresh, by the same rules.
    again = post(client, push)
    assert again.status_code == 200
    assert {**builder.open_reply(again.content), "CreateTime": 0} == {**reply, "CreateTime": 0}


def test_keyword_reply_reaches_the_emulator(tmp_path, emulator):
    emu, _ = emulator
    app, client, builder = build(tmp_path, emulator)
    message = make_text("请问营业时间", msg_id=9001, from_user="o-hours", create_time=int(time.time()))
    emu.notify_push(APPID, message)
    with delivering(tmp_path, emulator):
        assert post(client, builder.build(message)).text == "success"
        wait_for_reply(emu, "o-hours")
    assert [p for _, user, p in emu.sent(APPID) if user == "o-hours"] == [
        {"msgtype": "text", "text": {"content": "9:00–18:00"}}]


def test_a_retry_gets_the_first_answer_even_once_the_rules_changed(tmp_path, emulator):
    """The hand-off rule is gone by the time WeChat delivers the push again: the retry is
    answered as the first delivery was, not by the rules of the moment."""
    _, client, builder = build(tmp_path, emulator)
    push = builder.build(make_text("转人工", msg_id=556, from_user="o-rules"))
    first = post(client, push)
    assert builder.open_reply(first.content)["MsgType"] == "transfer_customer_service"
    taker = SqliteStore(str(tmp_path / "wxpush.db"))   # the delivery process takes it
    assert [e.key for e in taker.inbox_take(owner="d", lease=30, limit=10, max_attempts=5)] \
        == [f"{APPID}:msg:556"]
    taker.close()
    _, edited, _ = build(tmp_path, emulator, rules="[builtins.handoff]\nenabled = false\n")
    assert post(edited, push).content == first.content
    assert post(edited, builder.build(make_text("转人工", msg_id=557))).text == "success"


def test_the_app_only_records_and_a_delivery_process_handles(tmp_path, emulator):
    emu, _ = emulator
    app, client, builder = build(tmp_path, emulator)
    message = make_text("请问营业时间", msg_id=9004, from_user="o-split", create_time=int(time.time()))
    emu.notify_push(APPID, message)
    app.start()
    try:
        assert post(client, builder.build(message)).text == "success"
        assert app.store.inbox_stats() == {"pending": 1, "dead": 0}   # recorded, left alone
        assert inbox_states(tmp_path) == {}
        with delivering(tmp_path, emulator):
            wait_for_reply(emu, "o-split")
    finally:
        app.stop()
    assert inbox_states(tmp_path) == {"done": 1}


def test_retries_recorded_before_the_first_was_taken_are_handled_once(tmp_path, emulator):
    """A retry that comes before its first delivery was taken from the journal is dropped
    when it is taken, not on the request path."""
    emu, _ = emulator
    app, client, builder = build(tmp_path, emulator)
    message = make_text("请问营业时间", msg_id=9002, from_user="o-twice", create_time=int(time.time()))
    emu.notify_push(APPID, message)
    push = builder.build(message)
    assert [post(client, push).text for _ in range(4)] == ["success"] * 4   # none taken yet
    with delivering(tmp_path, emulator) as store:
        wait_for_reply(emu, "o-twice")
        assert wait_for_states(tmp_path, {"done": 1})
    assert len([s for s in emu.sent(APPID) if s[1] == "o-twice"]) == 1
    assert app.store.outbox_stats()["sent"] == 1 and store.inbox_stats()["pending"] == 0


def test_a_recorded_push_that_cannot_be_read_is_set_aside_with_a_log_line(tmp_path, emulator,
                                                                          caplog):
    """It was answered, so it must not vanish: it is set aside as dead at once (it will not
    read any better), and WeChat's retry of it is a duplicate of it."""
    app, client, builder = build(tmp_path, emulator)
    unreadable = InboxEntry(key=f"{APPID}:msg:9", appid=APPID, format="xml",
                            payload="<xml><MsgType>text</MsgType></xml>", answer="success",
                            received_at=time.time())
    app.store.inbox_record(unreadable, ttl=600)
    push = builder.build(make_text("hello", msg_id=9003, create_time=int(time.time())))
    assert post(client, push).text == "success"
    with caplog.at_level(logging.INFO):
        with delivering(tmp_path, emulator):
            assert wait_for_states(tmp_path, {"done": 1, "dead": 1})
        assert app.store.inbox_record(unreadable, ttl=600) == "success"   # WeChat's retry
    assert f"push duplicate appid={APPID} key=msg:9 state=dead" in caplog.text
    [dead] = app.store.inbox_list(state="dead")
    assert dead.key == unreadable.key and dead.payload == unreadable.payload
    assert dead.error == "MalformedRequest: ToUserName is missing"
    assert (f"push set aside key={dead.key} attempts=1 error=MalformedRequest: ToUserName is "
            "missing" in caplog.text)


def wait_for_states(tmp_path: Path, states: dict[str, int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while inbox_states(tmp_path) != states:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def inbox_states(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "wxpush.db") as conn:
        return dict(conn.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall())


def test_a_started_worker_hands_the_gil_over_within_a_millisecond(tmp_path, emulator):
    app, _, _ = build(tmp_path, emulator)
    before = sys.getswitchinterval()
    app.start()
    try:
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        app.stop()
        sys.setswitchinterval(before)


def test_the_push_path_is_answered_on_the_workers_loop_only_where_recording_is_local(
        tmp_path, emulator, redis_server):
    """Recording in the SQLite store is a read and a copy into a file; with Redis it is a
    round trip, which the loop must not wait on. The mini program's paths call WeChat: never."""
    local, _, _ = build(tmp_path, emulator)
    settings = make_settings(tmp_path, emulator)
    _, api = store_and_api(tmp_path, settings)
    remote = create_app(settings, store=RedisStore.from_url(redis_server.url), api=api,
                        router=build_router(settings.server.rules))
    assert local.inline_paths == ("/wechat/", "/healthz")
    assert remote.inline_paths == ("/healthz",)
    remote.store.close()


def test_an_app_built_before_a_fork_refuses_to_start_in_the_child(tmp_path, emulator):
    """gunicorn --preload would build it once for every worker: one journal file, one set of
    store connections and locks written by all of them."""
    app, _, _ = build(tmp_path, emulator)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            app.start()
            os.write(write, b"started")
        except RuntimeError as refused:
            os.write(write, str(refused).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as told:
        assert told.read().decode() == ("the app was built before the fork: run gunicorn "
                                        "without --preload (wxpush's gunicorn.conf.py sets "
                                        "preload_app = False)")


# --- bad input: a 4xx with a short plain reason, never a 5xx ----------------------------------

def tamper(query, key, value=None):
    changed = dict(query)
    if value is None:
        changed.pop(key)
    else:
        changed[key] = value
    return changed


@pytest.mark.parametrize("case, status", [
    ("missing timestamp", 400), ("missing nonce", 400),
    ("missing msg_signature", 400), ("bad msg_signature", 403),
    ("missing signature, plaintext", 400), ("bad signature, plaintext", 403),
    ("stale timestamp", 403), ("not a number timestamp", 400), ("unknown app", 404),
    ("malformed body", 400), ("plaintext in safe mode", 400), ("repeated parameter", 400),
])
def test_bad_requests_are_refused(tmp_path, emulator, case, status, caplog):
    _, client, builder = build(tmp_path, emulator,
                               mode="plaintext" if case.endswith("plaintext") else "safe")
    push = builder.build(make_text("hi", msg_id=1))
    query, body, appid = push.query, push.body, APPID
    if case.startswith("missing"):
        query = tamper(query, case.split()[1].rstrip(","))
    elif case == "bad signature, plaintext":
        query = tamper(query, "signature", "0" * 40)
    elif case == "bad msg_signature":
        query = tamper(query, "msg_signature", "0" * 40)
    elif case == "stale timestamp":
        stale = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=KEY, clock=lambda: 1_000_000)
        push = stale.build(make_text("hi", msg_id=1))
        query, body = push.query, push.body
    elif case == "not a number timestamp":
        query = tamper(query, "timestamp", "12a")
    elif case == "unknown app":
        appid = "wx0000000000000000"
    elif case == "malformed body":
        body = b"<xml><ToUserName>"
    elif case == "plaintext in safe mode":
        query = tamper(tamper(query, "encrypt_type"), "msg_signature")
    elif case == "repeated parameter":
        query = {**query, "nonce": [query["nonce"], "1"]}
    with caplog.at_level(logging.INFO):
        result = client.simulate_post(f"/wechat/{appid}", params=query, body=body)
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("text/plain")
    assert 0 < len(result.text) < 80 and "Traceback" not in result.text
    for secret in (TOKEN + "x", KEY, SECRET):
        assert secret not in caplog.text


def test_oversize_body_is_refused_without_reading(tmp_path, emulator):
    _, client, builder = build(tmp_path, emulator, max_body=1024)
    push = builder.build(make_text("x" * 2000, msg_id=2))
    result = post(client, push)
    assert (result.status_code, result.text) == (413, "body over 1024 bytes")


def test_entities_are_refused_quickly(tmp_path, emulator):
    _, client, builder = build(tmp_path, emulator, mode="plaintext")
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + b"".join(b'<!ENTITY lol%d "&lol%s;&lol%s;&lol%s;&lol%s;&lol%s;&lol%s;&lol%s;&lol%s;&lol%s;&lol%s;">'
                       % (i, *([b"" if i == 1 else str(i - 1).encode()] * 10)) for i in range(1, 10))
            + b']><xml><Content>&lol9;</Content></xml>')
    query = builder.build(make_text("hi", msg_id=3)).query
    result = client.simulate_post(f"/wechat/{APPID}", params=query, body=bomb)
    assert result.status_code == 400


def test_events_are_acknowledged(tmp_path, emulator):
    _, client, builder = build(tmp_path, emulator)
    result = post(client, builder.build(make_enter_session("button-1")))
    assert (result.status_code, result.text) == (200, "success")
