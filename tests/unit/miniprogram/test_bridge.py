"""POST /apps/{appid}/functions/{name}: mini program B's users call app A's cloud functions with
their login session, against the emulator (on 127.0.0.1) and a real store (SQLite, Redis)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.testing
import pytest
import requests

from webhook.config.settings import AppConfig, Bridge, ServerConfig, Settings
from webhook.miniprogram import bridge, endpoints
from webhook.testing import Emulator, serve
from webhook.testing.emulator.cloud import RawResult
from webhook.wechat.api import WeChatAPI
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

A, A_SECRET, A_ENV = "wxaaaaaaaaaaaaaaaa", "secret-a", "shop-a1"
B, B_SECRET = "wxbbbbbbbbbbbbbbbb", "secret-b"
ALICE, BOB = "o-alice", "o-bob"
BRIDGED = ("echo", "orderStatus", "slow", "boom", "raw", "gone")
INVOKE = "/tcb/invokecloudfunction"


@dataclass
class World:
    client: falcon.testing.TestClient
    emulator: Emulator
    clock: Any

    def login(self, openid: str = ALICE) -> str:
        answer = self.client.simulate_post(f"/apps/{B}/login", json={
            "code": self.emulator.login_code(B, openid)})
        assert answer.status_code == 200, answer.text
        return answer.json["session"]

    def call(self, name: str, body: Any = None, *, session: str | None = None,
             raw: bytes | None = None, appid: str = B,
             content_type: str = "application/json") -> falcon.testing.Result:
        headers = {"Content-Type": content_type}
        if session is not None:
            headers["Authorization"] = f"Bearer {session}"
        return self.client.simulate_post(
            f"/apps/{appid}/functions/{name}", headers=headers,
            body=raw if raw is not None else json.dumps({} if body is None else body))

    def invocations(self) -> list:
        return self.emulator.calls(INVOKE)


def build(store, clock, url: str, http: requests.Session, **server: Any) -> falcon.App:
    apps = {A: AppConfig(appid=A, token="t", secret=A_SECRET, mode="plaintext", cloud_env=A_ENV),
            B: AppConfig(appid=B, token="t", secret=B_SECRET, mode="plaintext",
                         bridge=(Bridge(A, BRIDGED),))}
    settings = Settings(server=ServerConfig(api_base=url, max_body=2048, session_ttl=3600,
                                            **{"burst_per_client": 100, **server}), apps=apps)
    wechat = WeChatClient(url, session=http)
    api = WeChatAPI(wechat, TokenProvider(store, wechat, apps, clock=clock), store)
    app = falcon.App()
    endpoints.register(app, settings=settings, api=api, store=store, clock=clock)
    bridge.register(app, settings=settings, api=api, store=store, clock=clock)
    return app


@pytest.fixture
def emulator(clock) -> Emulator:
    emulator = Emulator(clock=clock)
    emulator.register_app(A, A_SECRET)
    emulator.register_app(B, B_SECRET)
    emulator.add_cloud_env(A, A_ENV, functions={
        "echo": lambda event: event,
        "slow": lambda event: time.sleep(1.0),
        "boom": lambda event: 1 / 0,
        "raw": lambda event: RawResult("<html>oops</html>"),
    })
    return emulator


@pytest.fixture
def world(store, clock, emulator) -> Iterator[World]:
    with serve(emulator.app) as running, requests.Session() as http:
        yield World(falcon.testing.TestClient(build(store, clock, running.url, http)), emulator,
                    clock)


def refused(result, status: int, errcode: int) -> str:
    assert result.status_code == status, result.text
    assert set(result.json) == {"errcode", "errmsg"} and result.json["errcode"] == errcode
    return result.json["errmsg"]


def test_a_session_calls_an_allowed_function_of_the_other_app_with_its_verified_openid(world):
    session = world.login(ALICE)
    answer = world.call("echo", {"n": 1, "openid": "o-forged", "appid": "wx-forged"},
                        session=session)
    assert answer.status_code == 200
    assert answer.json == {"errcode": 0, "errmsg": "ok",
                           "data": {"n": 1, "openid": ALICE, "appid": B}}
    (call,) = world.invocations()
    assert (call.appid, call.params) == (A, {"env": A_ENV, "name": "echo"})
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("name", ["users_add", "ech", "echo..", "%2e%2e", "a" * 61])
def test_a_function_not_bridged_is_403_without_calling_wechat(world, name):
    assert "not allowed" in refused(world.call(name, session=world.login()), 403, 48001)
    assert world.invocations() == []


def test_no_session_a_bad_one_or_an_expired_one_is_401_without_calling_wechat(world):
    session = world.login()
    refused(world.call("echo"), 401, 41008)
    refused(world.call("echo", session="not-a-session"), 401, 42003)
    answer = world.client.simulate_post(f"/apps/{B}/functions/echo", json={},
                                        headers={"Authorization": f"Basic {session}"})
    refused(answer, 401, 41008)
    world.clock.advance(3601)
    refused(world.call("echo", session=session), 401, 42003)
    assert world.invocations() == []


def test_a_session_of_another_app_is_no_session_here(world):
    code = world.emulator.login_code(A, ALICE)
    session_a = world.client.simulate_post(f"/apps/{A}/login", json={"code": code}).json["session"]
    refused(world.call("echo", session=session_a), 401, 42003)
    refused(world.call("echo", session=session_a, appid=A), 403, 48001)   # A bridges nothing
    refused(world.call("echo", session=session_a, appid="wxnope"), 404, 40013)
    assert world.invocations() == []


@pytest.mark.parametrize("raw, content_type, status, errcode", [
    (b"{not json", "application/json", 400, 47001),
    (b"[1, 2]", "application/json", 400, 47001),
    (b"", "application/json", 400, 44002),
    (b'{"a": "\\ud800"}', "application/json", 400, 47001),
    (b'{"a": "' + b"x" * 3000 + b'"}', "application/json", 413, 45002),
    (b"{}", "text/plain", 415, 47001),
])
def test_a_bad_body_is_refused_without_calling_wechat(world, raw, content_type, status, errcode):
    refused(world.call("echo", raw=raw, content_type=content_type, session=world.login()),
            status, errcode)
    assert world.invocations() == []


def test_what_became_of_the_function(world):
    world.emulator.function_limit = 0.3
    session = world.login()
    assert "timed out" in refused(world.call("slow", session=session), 504, -504003)
    assert "ZeroDivisionError" in refused(world.call("boom", session=session), 502, -504002)
    assert "not JSON" in refused(world.call("raw", session=session), 502, -1)
    assert refused(world.call("gone", session=session), 404, -501000) == "unknown function gone"


def test_a_target_environment_that_does_not_exist_is_502(world):
    world.emulator.cloud_envs.pop(A_ENV)
    assert "check its cloud_env" in refused(world.call("echo", session=world.login()), 502,
                                            -501000)


def test_each_session_has_its_own_rate_limit(store, clock, emulator):
    with serve(emulator.app) as running, requests.Session() as http:
        world = World(falcon.testing.TestClient(
            build(store, clock, running.url, http, burst_per_client=3)), emulator, clock)
        alice, bob = world.login(ALICE), world.login(BOB)   # two logins from one address
        for _ in range(3):
            assert world.call("echo", session=alice).status_code == 200
        answer = world.call("echo", session=alice)
        assert "for this session" in refused(answer, 429, 45011)
        assert answer.headers["Retry-After"] == "1"
        assert world.call("echo", session=bob).status_code == 200
        assert len(world.invocations()) == 4
