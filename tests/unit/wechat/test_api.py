"""WeChatAPI, TokenProvider and WeChatClient against the real emulator served on 127.0.0.1,
including several processes sharing one SQLite file or one Redis (one token fetch)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from webhook.config.settings import AppConfig
from webhook.errors import Permanent, Retryable
from webhook.testing import Emulator, serve
from webhook.wechat.api import MEDIA_TTL, WeChatAPI
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

APPID, SECRET, USER = "wxapi0123456789ab", "secret-api", "oUser-1"
APPS = {APPID: AppConfig(appid=APPID, token="t", secret=SECRET)}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def emulator(clock) -> Emulator:
    emu = Emulator(clock=clock, seed=1)
    emu.register_app(APPID, SECRET)
    emu.notify_push(APPID, {"FromUserName": USER, "MsgType": "text"})
    return emu


@pytest.fixture
def server(emulator) -> Iterator[str]:
    with serve(emulator.app) as running:
        yield running.url


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def make_api(store, server, session, clock, *, endpoint="stable") -> WeChatAPI:
    client = WeChatClient(server, session=session)
    tokens = TokenProvider(store, client, APPS, endpoint=endpoint, clock=clock,
                           sleep=clock.advance)
    return WeChatAPI(client, tokens, store)


@pytest.fixture
def api(store, server, session, clock) -> WeChatAPI:
    return make_api(store, server, session, clock)


def test_send_text_with_one_token_fetch(api, emulator):
    for n in range(3):
        api.send(APPID, USER, {"msgtype": "text", "text": {"content": f"hi {n}"}})
    assert [s[2]["text"]["content"] for s in emulator.sent(APPID)] == ["hi 0", "hi 1", "hi 2"]
    assert emulator.token_fetches(APPID)["stable_token"] == 1
    assert all("access_token" not in c.params for c in emulator.calls())


def test_local_image_is_uploaded_once_and_reused(api, emulator, tmp_path, clock):
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    api.send(APPID, USER, {"msgtype": "image", "image": {"path": str(image)}})
    api.send(APPID, USER, {"msgtype": "miniprogrampage", "miniprogrampage": {
        "title": "t", "pagepath": "pages/index", "thumb_path": str(image)}})
    image_body, card = emulator.sent(APPID)[0][2], emulator.sent(APPID)[1][2]
    assert set(image_body["image"]) == {"media_id"}
    assert card["miniprogrampage"] == {"title": "t", "pagepath": "pages/index",
                                       "thumb_media_id": image_body["image"]["media_id"]}
    assert len(emulator.calls("/cgi-bin/media/upload")) == 1
    image.write_bytes(PNG + b"edited")      # new content: a new upload
    api.send(APPID, USER, {"msgtype": "image", "image": {"path": str(image)}})
    assert emulator.sent(APPID)[2][2]["image"]["media_id"] != image_body["image"]["media_id"]
    clock.advance(MEDIA_TTL + 1)            # cached id outlived: uploaded again
    emulator.notify_push(APPID, {"FromUserName": USER, "MsgType": "text"})
    api.send(APPID, USER, {"msgtype": "image", "image": {"path": str(image)}})
    assert len(emulator.calls("/cgi-bin/media/upload")) == 3


def test_media_id_refused_early_is_uploaded_again(api, emulator, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(PNG)
    api.send(APPID, USER, {"msgtype": "image", "image": {"path": str(image)}})
    first = emulator.sent(APPID)[0][2]["image"]["media_id"]
    emulator.fail_next("/cgi-bin/message/custom/send", errcode=40007)
    api.send(APPID, USER, {"msgtype": "image", "image": {"path": str(image)}})
    second = emulator.sent(APPID)[1][2]["image"]["media_id"]
    assert second != first and len(emulator.calls("/cgi-bin/media/upload")) == 2


def test_missing_local_file_raises_oserror(api):
    with pytest.raises(OSError):
        api.send(APPID, USER, {"msgtype": "image", "image": {"path": "/nonexistent.png"}})


def test_forced_40001_recovers_with_one_force_refresh(api, emulator):
    api.send(APPID, USER, {"msgtype": "text", "text": {"content": "a"}})
    emulator.fail_next("/cgi-bin/message/custom/send", errcode=40001)
    api.send(APPID, USER, {"msgtype": "text", "text": {"content": "b"}})
    fetches = emulator.token_fetches(APPID)
    assert fetches["stable_token"] == 3 and fetches["forced"] == 1
    assert len(emulator.sent(APPID)) == 2


def test_persistent_40001_fetches_a_handful_of_tokens_then_sends(api, emulator, clock):
    emulator.set_faults(force_40001_rate=1.0, paths=("/cgi-bin/message/custom/send",))
    for n in range(50):                       # 50 failed sends in 20 s
        with pytest.raises(Retryable) as caught:
            api.send(APPID, USER, {"msgtype": "text", "text": {"content": f"m{n}"}})
        assert caught.value.errcode == 40001
        clock.advance(0.4)
    fetches = emulator.token_fetches(APPID)
    assert fetches["stable_token"] <= 3 and fetches["forced"] <= 1, fetches
    emulator.set_faults()                     # WeChat takes tokens again
    api.send(APPID, USER, {"msgtype": "text", "text": {"content": "after"}})
    assert [s[2]["text"]["content"] for s in emulator.sent(APPID)] == ["after"]
    assert emulator.token_fetches(APPID) == fetches


def test_classic_token_rotated_elsewhere_is_replaced(store, server, session, clock, emulator):
    api = make_api(store, server, session, clock, endpoint="classic")
    api.send(APPID, USER, {"msgtype": "text", "text": {"content": "a"}})
    other = WeChatClient(server, session=session)   # an unrelated fetcher rotates twice
    other.token(appid=APPID, secret=SECRET)
    other.token(appid=APPID, secret=SECRET)
    api.send(APPID, USER, {"msgtype": "text", "text": {"content": "b"}})
    assert emulator.token_fetches(APPID)["token"] == 4 and len(emulator.sent(APPID)) == 2
    assert [c.errcode for c in emulator.calls("/cgi-bin/message/custom/send")] == [0, 40001, 0]


def test_upstream_failures_surface_as_the_tree(api, emulator):
    emulator.fail_next("/cgi-bin/message/custom/send", http_status=502)
    with pytest.raises(Retryable):
        api.send(APPID, USER, {"msgtype": "text", "text": {"content": "x"}})
    with pytest.raises(Permanent) as caught:
        api.send(APPID, "oStranger", {"msgtype": "text", "text": {"content": "x"}})
    assert caught.value.errcode == 40003


def test_typing_login_and_open_data(api, emulator):
    api.typing(APPID, USER, "Typing")
    session = api.code2session(APPID, emulator.login_code(APPID, USER))
    assert session["openid"] == USER and session["session_key"]
    phone = api.get_phone_number(APPID, emulator.phone_code(APPID, USER, "13800000000"))
    assert phone["purePhoneNumber"] == "13800000000"
    cloud_id = emulator.cloud_id(APPID, USER, {"stepInfoList": []})
    [item] = api.get_open_data(APPID, [cloud_id], openid=USER)
    assert item["cloud_id"] == cloud_id


# -- several processes, one store --------------------------------------------------------------

WORKER = """
import sys, threading, time
from webhook.wechat.client import WeChatClient
from webhook.errors import Retryable
from webhook.config.settings import AppConfig
from webhook.wechat.tokens import TokenProvider
base, appid, secret, kind, where, prefix, start, index = sys.argv[1:]
if kind == "sqlite":
    from webhook.store.sqlite import SqliteStore
    store = SqliteStore(where)
else:
    from webhook.store.redis import RedisStore
    store = RedisStore.from_url(where, prefix=prefix)
client = WeChatClient(base)
tokens = TokenProvider(store, client, {appid: AppConfig(appid=appid, token="t", secret=secret)},
                       poll=0.01)
seen = set()
def send(token, user):
    client.send(access_token=token, touser=user,
                payload={"msgtype": "text", "text": {"content": "hi"}})
    return token
def work(thread):
    for _ in range(5):     # a user message allows 5 sends (docs/protocol.md §4.2)
        for attempt in range(20):   # as the sender does: retry a refused connection (backlog)
            try:
                seen.add(tokens.call(appid, lambda token: send(token, f"o-{index}-{thread}")))
                break
            except Retryable as exc:
                if exc.errcode != -1:
                    raise
                time.sleep(0.05)
time.sleep(max(0.0, float(start) - time.time()))
threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(len(seen))
"""


def run_processes(emu: Emulator, server: str, kind: str, where: str, prefix: str) -> list[str]:
    """4 processes x 4 threads x 5 sends; each prints how many distinct tokens it used."""
    for index in range(4):
        for thread in range(4):
            emu.notify_push(APPID, {"FromUserName": f"o-{index}-{thread}", "MsgType": "text"})
    start = str(time.time() + 1.5)    # all four import first, then start together
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, server, APPID, SECRET, kind, where,
                               prefix, start, str(index)], stdout=subprocess.PIPE, text=True,
                              env=env)
             for index in range(4)]
    return [p.communicate(timeout=60)[0].strip() for p in procs]


@pytest.fixture
def live_emulator() -> Iterator[tuple[Emulator, str]]:
    """Real time (other processes use time.time), a slow token endpoint to force overlap."""
    emu = Emulator(seed=2)
    emu.register_app(APPID, SECRET)
    emu.set_faults(delay_rate=1.0, delay_seconds=0.2, paths=("/cgi-bin/stable_token",))
    with serve(emu.app) as running:
        yield emu, running.url


@pytest.fixture(params=["sqlite", "redis"])
def shared_store(request, tmp_path) -> Iterator[tuple[str, str, str]]:
    """(kind, where, prefix) of one store for several processes."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "shared.db"), ""
        return
    server = request.getfixturevalue("redis_server")
    prefix = f"test-api:{uuid.uuid4().hex}:"
    yield "redis", server.url, prefix
    client = server.client()
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


@pytest.mark.slow
def test_four_processes_one_fetch_then_one_refetch_after_upstream_expiry(live_emulator,
                                                                         shared_store):
    emu, url = live_emulator
    assert run_processes(emu, url, *shared_store) == ["1"] * 4       # cold cache
    assert emu.token_fetches(APPID)["stable_token"] == 1
    emu.advance(7200)    # the cached token expired upstream: every process gets 42001 at once
    assert run_processes(emu, url, *shared_store) == ["1"] * 4
    assert emu.token_fetches(APPID)["stable_token"] == 2 and len(emu.sent(APPID)) == 160
    errcodes = Counter(c.errcode for c in emu.calls("/cgi-bin/message/custom/send"))
    assert errcodes[0] == 160 and errcodes[42001] >= 1


# -- wxpush token ------------------------------------------------------------------------------

def test_cli_token_refresh_and_show(server, emulator, tmp_path, capsys):
    import argparse

    from webhook.cli import token as token_cli

    config = tmp_path / "wxpush.toml"
    config.write_text(f'[server]\napi_base = "{server}"\nstore = "sqlite:///cli.db"\n'
                      f'[[apps]]\nappid = "{APPID}"\ntoken = "t"\nsecret = "{SECRET}"\n'
                      f'mode = "plaintext"\n')
    parser = argparse.ArgumentParser(prog="wxpush")
    token_cli.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(["token", *argv, "--config", str(config)])
        return args.handler(args)

    assert run("show", APPID) == 1
    assert run("refresh", APPID) == 0
    assert run("show", APPID) == 0
    shown = capsys.readouterr().out
    [issued] = list(emulator.tokens)
    assert "fingerprint" in shown and "expires" in shown and issued not in shown
    assert run("show", APPID, "--reveal") == 0
    assert f"token       {issued}" in capsys.readouterr().out
    assert run("refresh", APPID, "--force") == 0
    with pytest.raises(Retryable, match="force refresh refused"):
        run("refresh", APPID, "--force")
    assert emulator.token_fetches(APPID)["forced"] == 1
