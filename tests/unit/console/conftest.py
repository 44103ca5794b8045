"""A console over a real SQLite store and the emulator, driven through falcon.testing, with
the delivery process's work running in the test's process."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import falcon.testing
import pytest
import requests

from handlers import build_router
from webhook.config.settings import (AppConfig, ConsoleConfig, Operator, ServerConfig,
                                     Settings)
from webhook.passwords import Scrypt, hash_password
from webhook.routing.live import LiveRouter
from webhook.delivery.history import History
from webhook.server.app import WxpushApp, create_app, create_background
from webhook.store.sqlite import SqliteStore
from webhook.testing import Emulator, PushBuilder, serve
from webhook.wechat.api import WeChatAPI
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

APPID, OTHER = "wxc0501e0000000001", "wxc0501e0000000002"
TOKEN, KEY = "consoletoken", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PASSWORD = "correct horse battery"
CHEAP = Scrypt(n=1 << 10)   # logins are the subject, not the hash's cost
RULES = """
[[rule]]
name = "hours"
keywords = ["几点"]
reply.text = "9:00-18:00"

[builtins.fallback]
text = "没听懂"
"""


@dataclass
class Console:
    app: WxpushApp
    client: falcon.testing.TestClient
    store: SqliteStore
    emulator: Emulator
    builder: PushBuilder
    rules: Path
    clock: object
    cookie: str = ""

    def login(self, name: str = "ana", password: str = PASSWORD,
              headers: dict | None = None) -> falcon.testing.Result:
        fresh = falcon.testing.TestClient(self.app)   # a browser with no session yet
        form = fresh.simulate_get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        result = fresh.simulate_post(
            "/console/login", body=f"csrf={token}&name={name}&password={password.replace(' ', '+')}",
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {}),
                     "Cookie": f"wxpush_console_login={token}"})
        if "wxpush_console" in result.cookies:   # the browser keeps it from now on
            self.cookie = f"wxpush_console={result.cookies['wxpush_console'].value}"
            self.client = falcon.testing.TestClient(self.app, headers={"Cookie": self.cookie})
        return result

    def csrf(self, page: str = "/console/conversations") -> str:
        return re.search(r'<meta name="csrf" content="([^"]+)"',
                         self.client.simulate_get(page).text).group(1)

    def post(self, path: str, fields: dict, *, csrf: str | None = None, **kwargs):
        from urllib.parse import urlencode

        if csrf is not None:
            fields = {**fields, "csrf": csrf}
        return self.client.simulate_post(
            path, body=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "X-Requested-With": "console", **kwargs.pop("headers", {})}, **kwargs)

    def wait(self, predicate, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError("timed out")

    def replied(self, count: int) -> list:
        """Wait until WeChat got ``count`` replies and each is marked sent in the store: WeChat
        has a reply a moment before wxpush marks it, and the pages show the mark."""
        def done():
            sent = self.emulator.sent(APPID)
            return len(sent) == count and self.store.outbox_stats()["sent"] == count and sent
        return self.wait(done)

    def push(self, openid: str, text: str, msg_id: int) -> None:
        fields = {"ToUserName": self.builder.original_id, "FromUserName": openid,
                  "CreateTime": int(self.clock()), "MsgType": "text", "Content": text,
                  "MsgId": msg_id}
        self.emulator.notify_push(APPID, fields)
        push = self.builder.build(fields)
        from urllib.parse import urlencode
        answer = self.client.simulate_post(f"/wechat/{APPID}", query_string=urlencode(push.query),
                                           body=push.body)
        assert answer.status_code == 200, answer.text


def settings_for(tmp_path: Path, api_base: str, *, operators=None, history_days: int = 7):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    hashed = hash_password(PASSWORD, cost=CHEAP)
    if operators is None:
        operators = (Operator("ana", hashed), Operator("bo", hashed, (OTHER,)))
    return Settings(
        server=ServerConfig(api_base=api_base, rules=str(rules), history_days=history_days),
        apps={a: AppConfig(appid=a, token=TOKEN, secret="s", encoding_aes_key=KEY)
              for a in (APPID, OTHER)},
        console=ConsoleConfig(operators=operators))


def build_console(tmp_path: Path, clock, **options) -> Iterator[Console]:
    emulator = Emulator(clock=clock)
    for appid in (APPID, OTHER):
        emulator.register_app(appid, "s")
    with serve(emulator.app) as upstream, requests.Session() as http:
        settings = settings_for(tmp_path, upstream.url, **options)
        store = SqliteStore(str(tmp_path / "wxpush.db"), clock=clock)
        wechat = WeChatClient(upstream.url, session=http)
        api = WeChatAPI(wechat, TokenProvider(store, wechat, settings.apps, clock=clock), store)
        router = LiveRouter(lambda: build_router(settings.server.rules), settings.server.rules,
                            clock=clock)
        app = create_app(settings, store=store, api=api, router=router, clock=clock,
                         rng=random.Random(1))
        # the delivery process's work, here in the test's process
        history = History(store, days=settings.server.history_days, clock=clock)
        background = create_background(settings, store=store, api=api, router=router,
                                       clock=clock, history=history)
        app.start()
        background.start()
        history.start()
        try:
            yield Console(app, falcon.testing.TestClient(app), store, emulator,
                          PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=KEY,
                                      clock=clock), Path(settings.server.rules), clock)
        finally:
            background.stop()
            history.stop()
            app.stop()
            store.close()


@pytest.fixture
def console(tmp_path, clock) -> Iterator[Console]:
    yield from build_console(tmp_path, clock)
