"""The token service: a client's API key reads the shared access_token of the apps granted to
it, and reports a refused token, which is replaced only while it is the current one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import falcon
import falcon.testing
import pytest
import requests

from webhook.config.settings import AppConfig, ClientConfig, ServerConfig, Settings
from webhook.server import tokenservice
from webhook.server.tokenservice import key_digest
from webhook.testing import Emulator, serve
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

A, B = "wxaaaaaaaaaaaaaaaa", "wxbbbbbbbbbbbbbbbb"
ERP_KEY, CRM_KEY = "erp-key-0123456789abcdefghijklmnopqrstuv", "crm-key-9876543210"


@dataclass
class World:
    client: falcon.testing.TestClient
    emulator: Emulator
    tokens: TokenProvider

    def get(self, appid: str = A, key: str | None = ERP_KEY) -> falcon.testing.Result:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return self.client.simulate_get(f"/apps/{appid}/access_token", headers=headers)

    def report(self, token, appid: str = A, key: str = ERP_KEY) -> falcon.testing.Result:
        return self.client.simulate_post(f"/apps/{appid}/access_token/invalid",
                                         headers={"Authorization": f"Bearer {key}"},
                                         json={"access_token": token})

    def fetches(self, appid: str = A) -> int:
        counts = self.emulator.token_fetches(appid)
        return counts["stable_token"] + counts["token"]


@pytest.fixture
def world(store, clock) -> Iterator[World]:
    emulator = Emulator(clock=clock)
    emulator.register_app(A, "secret-a")
    emulator.register_app(B, "secret-b")
    apps = {A: AppConfig(appid=A, token="t", secret="secret-a"),
            B: AppConfig(appid=B, token="t", secret="secret-b")}
    clients = (ClientConfig("erp", key_digest(ERP_KEY), (A,)),
               ClientConfig("crm", key_digest(CRM_KEY), (A, B)))
    with serve(emulator.app) as running, requests.Session() as http:
        wechat = WeChatClient(running.url, session=http)
        tokens = TokenProvider(store, wechat, apps, clock=clock, sleep=clock.advance)
        app = falcon.App()
        tokenservice.register(app, tokens=tokens, clock=clock, settings=Settings(
            server=ServerConfig(api_base=running.url), apps=apps, clients=clients))
        yield World(falcon.testing.TestClient(app), emulator, tokens)


def test_a_client_gets_the_token_the_server_uses(world, caplog):
    with caplog.at_level(logging.DEBUG):
        answer = world.get()
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    assert answer.json == {"access_token": world.tokens.get(A), "expires_in": 7200}
    assert world.fetches() == 1
    assert world.get(key=CRM_KEY).json["access_token"] == answer.json["access_token"]
    assert ERP_KEY not in caplog.text and answer.json["access_token"] not in caplog.text
    assert "token served appid=wxaaaaaaaaaaaaaaaa client=erp" in caplog.text


@pytest.mark.parametrize("key, appid, status, errcode", [
    (None, A, 401, 41008), ("", A, 401, 41008), ("nope", A, 401, 41008),
    (ERP_KEY.upper(), A, 401, 41008), (ERP_KEY, B, 403, 48001), (ERP_KEY, "wxnone", 403, 48001),
])
def test_an_unknown_key_or_an_app_not_granted_is_refused_without_a_fetch(world, key, appid,
                                                                        status, errcode):
    answer = world.get(appid=appid, key=key)
    assert answer.status_code == status and answer.json["errcode"] == errcode
    assert "access_token" not in answer.json
    assert world.fetches(A) == world.fetches(B) == 0


def test_a_refused_token_is_replaced_once_and_an_old_one_not_at_all(world):
    first = world.get().json["access_token"]
    world.emulator.advance(60)
    replaced = world.report(first)
    assert replaced.status_code == 200 and replaced.json["access_token"] != first
    assert world.tokens.get(A) == replaced.json["access_token"]
    fetched = world.fetches()
    again = world.report(first, key=CRM_KEY)      # another client saw the old one refused
    assert again.json["access_token"] == replaced.json["access_token"]
    assert world.fetches() == fetched


@pytest.mark.parametrize("body", [b"{}", b'{"access_token": ""}', b'{"access_token": 5}',
                                  b"not json", b"[]"])
def test_a_report_without_a_token_is_400(world, body):
    answer = world.client.simulate_post(f"/apps/{A}/access_token/invalid", body=body, headers={
        "Authorization": f"Bearer {ERP_KEY}", "Content-Type": "application/json"})
    assert answer.status_code == 400 and world.fetches() == 0


def test_a_report_needs_the_key_before_its_body_is_read(world):
    answer = world.client.simulate_post(f"/apps/{A}/access_token/invalid", body=b"x" * 10,
                                        headers={"Content-Type": "text/plain"})
    assert answer.status_code == 401


def test_wechat_down_is_503_with_a_reason_that_names_nothing_of_ours(world):
    world.emulator.fail_next("/cgi-bin/stable_token", http_status=502)
    answer = world.get()
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert answer.json == {"errcode": 502, "errmsg": "WeChat or the store is busy or "
                                                    "unreachable: retry later"}
