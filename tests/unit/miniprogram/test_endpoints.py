"""webhook.miniprogram.endpoints: login, open data and phone endpoints against the real emulator
(served on 127.0.0.1) and a real store (SQLite and Redis)."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_from_bytes

import falcon
import falcon.testing
import pytest
import requests
from Crypto.Cipher import AES
from Crypto.Util.Padding import pad
from hypothesis import HealthCheck, given, settings, strategies as st

from webhook.config.settings import AppConfig, ServerConfig, Settings
from webhook.errors import StoreError
from webhook.miniprogram.endpoints import Session, Sessions, register
from webhook.store.base import Store
from webhook.testing import Emulator, serve
from webhook.wechat.api import WeChatAPI
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

APPID, SECRET = "wx1111111111111111", "secret-one"
OTHER, OTHER_SECRET = "wx2222222222222222", "secret-two"
ALICE, BOB = "o-alice", "o-bob"
TTL, MAX_AGE, MAX_BODY = 3600, 300, 2048


class Recording:
    """The store, with every value written kept for inspection."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.writes = inner, []

    def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        self.writes.append((key, value))
        self.inner.put(key, value, ttl=ttl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class World:
    client: falcon.testing.TestClient
    emulator: Emulator
    store: Recording
    bodies: list[str] = field(default_factory=list)

    def post(self, path: str, body: Any = None, *, token: str | None = None,
             raw: bytes | None = None, appid: str = APPID,
             headers: dict[str, str] | None = None) -> falcon.testing.Result:
        headers = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        result = self.client.simulate_post(
            f"/apps/{appid}/{path}", headers=headers,
            body=raw if raw is not None else json.dumps(body, ensure_ascii=False))
        self.bodies.append(result.text)
        return result

    def login(self, openid: str = ALICE, appid: str = APPID) -> str:
        result = self.post("login", {"code": self.emulator.login_code(appid, openid)},
                           appid=appid)
        assert result.status_code == 200, result.text
        return result.json["session"]

    def session_key(self, openid: str = ALICE, appid: str = APPID) -> str:
        return self.emulator.app_state(appid).users[openid].session_key


# Limits no test of the endpoints themselves reaches (the clock stands still)
UNLIMITED = {"burst_per_client": 10**6, "burst_per_app": 10**6}


def build(store: Store, clock: Any, base_url: str, http: requests.Session, **limits: Any
          ) -> tuple[falcon.testing.TestClient, Recording]:
    apps = {appid: AppConfig(appid=appid, token="t", secret=secret, mode="plaintext")
            for appid, secret in ((APPID, SECRET), (OTHER, OTHER_SECRET))}
    config = Settings(server=ServerConfig(api_base=base_url, session_ttl=TTL, max_body=MAX_BODY,
                                          opendata_max_age=MAX_AGE, **(limits or UNLIMITED)),
                      apps=apps)
    wechat = WeChatClient(base_url, session=http)
    recording = Recording(store)
    api = WeChatAPI(wechat, TokenProvider(store, wechat, apps, clock=clock), store)
    app = falcon.App()
    register(app, settings=config, api=api, store=recording, clock=clock)  # type: ignore[arg-type]
    return falcon.testing.TestClient(app), recording


@pytest.fixture
def world(store: Store, clock: Any) -> Iterator[World]:
    emulator = Emulator(clock=clock)
    emulator.register_app(APPID, SECRET)
    emulator.register_app(OTHER, OTHER_SECRET)
    with serve(emulator.app) as running, requests.Session() as http:
        client, recording = build(store, clock, running.url, http)
        yield World(client, emulator, recording)


def refused(result: falcon.testing.Result, status: int, errcode: int) -> str:
    assert result.status_code == status, result.text
    assert set(result.json) == {"errcode", "errmsg"} and result.json["errcode"] == errcode
    errmsg = result.json["errmsg"]
    assert errmsg and "\n" not in errmsg
    return errmsg


def seal(data: dict, key: str) -> tuple[str, str]:
    """encryptedData as WeChat makes it, with a watermark of our choosing."""
    iv = os.urandom(16)
    plain = json.dumps(data).encode()
    sealed = AES.new(base64.b64decode(key), AES.MODE_CBC, iv).encrypt(pad(plain, 16))
    return base64.b64encode(sealed).decode(), base64.b64encode(iv).decode()


# -- login -----------------------------------------------------------------------------------

def test_login_answers_openid_and_an_opaque_session(world: World) -> None:
    result = world.post("login", {"code": world.emulator.login_code(APPID, ALICE)})
    assert result.status_code == 200
    assert set(result.json) == {"openid", "session", "expires_in"}
    assert result.json["openid"] == ALICE and result.json["expires_in"] == TTL
    assert len(result.json["session"]) >= 40
    assert world.session_key() not in result.text
    assert result.headers["Cache-Control"] == "no-store"
    assert result.headers["Content-Type"].startswith("application/json")


def test_store_holds_neither_the_token_nor_the_session_key(world: World) -> None:
    token = world.login()
    sessions = [(k, v) for k, v in world.store.writes if k.startswith("miniprogram:session:")]
    assert len(sessions) == 1
    key, value = sessions[0]
    assert token not in key and token not in value
    assert world.session_key() not in value and ALICE in value


def test_login_code_is_single_use_and_short_lived(world: World) -> None:
    code = world.emulator.login_code(APPID, ALICE)
    assert world.post("login", {"code": code}).status_code == 200
    refused(world.post("login", {"code": code}), 401, 40163)
    stale = world.emulator.login_code(APPID, ALICE)
    world.emulator.advance(301)
    refused(world.post("login", {"code": stale}), 401, 40029)
    refused(world.post("login", {"code": "no-such-code"}), 401, 40029)
    refused(world.post("login", {"code": "a\nb"}), 401, 40029)
    refused(world.post("login", {"code": 12}), 401, 41008)
    refused(world.post("login", {}), 401, 41008)
    # another app's code is no code here
    refused(world.post("login", {"code": world.emulator.login_code(OTHER, ALICE)}), 401, 40029)


# -- encryptedData -----------------------------------------------------------------------------

def test_encrypted_data_round_trip(world: World, clock: Any) -> None:
    token = world.login()
    profile = {"nickName": "小明", "gender": 1, "openId": ALICE}
    encrypted, iv = world.emulator.encrypted_data(APPID, ALICE, profile)
    result = world.post("opendata", {"encryptedData": encrypted, "iv": iv}, token=token)
    assert result.status_code == 200, result.text
    assert result.json == {**profile, "watermark": {"timestamp": int(clock()), "appid": APPID}}


def test_raw_data_signature_checked(world: World) -> None:
    token = world.login()
    raw = json.dumps({"nickName": "小明"}, ensure_ascii=False)
    encrypted, iv = world.emulator.encrypted_data(APPID, ALICE, {"nickName": "小明"})
    body = {"encryptedData": encrypted, "iv": iv, "rawData": raw,
            "signature": world.emulator.raw_signature(APPID, ALICE, raw)}
    assert world.post("opendata", body, token=token).status_code == 200
    refused(world.post("opendata", {**body, "rawData": raw + " "}, token=token), 401, 87009)
    refused(world.post("opendata", {**body, "signature": None}, token=token), 400, 40097)


def test_encrypted_data_with_a_fresh_code_keeps_no_session(world: World) -> None:
    code = world.emulator.login_code(APPID, BOB)
    encrypted, iv = world.emulator.encrypted_data(APPID, BOB, {"step": 7})
    result = world.post("opendata", {"code": code, "encryptedData": encrypted, "iv": iv})
    assert result.status_code == 200 and result.json["step"] == 7
    assert not [k for k, _ in world.store.writes if k.startswith("miniprogram:session:")]
    refused(world.post("opendata", {"code": code, "encryptedData": encrypted, "iv": iv}),
            401, 40163)


def test_data_from_a_newer_login_asks_to_log_in_again(world: World) -> None:
    token = world.login()
    world.emulator.login_code(APPID, ALICE)          # wx.login again: a new session_key
    encrypted, iv = world.emulator.encrypted_data(APPID, ALICE, {"nickName": "x"})
    errmsg = refused(world.post("opendata", {"encryptedData": encrypted, "iv": iv},
                                token=token), 400, -41003)
    assert "log in again" in errmsg


@pytest.mark.parametrize("case, errcode", [
    ("base64", -41004), ("iv", -41002), ("padding", -41003), ("appid", -41003),
    ("stale", -41003), ("missing iv", -41004)])
def test_encrypted_data_refusals(world: World, clock: Any, case: str, errcode: int) -> None:
    token = world.login()
    encrypted, iv = world.emulator.encrypted_data(APPID, ALICE, {"nickName": "x"})
    body: dict[str, Any] = {"encryptedData": encrypted, "iv": iv}
    if case == "base64":
        body["encryptedData"] = "%%%" + encrypted
    elif case == "iv":
        body["iv"] = base64.b64encode(bytes(12)).decode()
    elif case == "padding":
        body = dict(zip(("encryptedData", "iv"), seal({"a": 1}, base64.b64encode(
            os.urandom(16)).decode())))
    elif case == "appid":
        mark = {"appid": OTHER, "timestamp": int(clock())}
        body = dict(zip(("encryptedData", "iv"), seal({"watermark": mark}, world.session_key())))
    elif case == "stale":
        clock.advance(MAX_AGE + 1)
    else:
        del body["iv"]
    refused(world.post("opendata", body, token=token), 400, errcode)


# -- sessions ----------------------------------------------------------------------------------

def test_opendata_needs_a_known_session(world: World, clock: Any) -> None:
    encrypted, iv = "AAAA", "AAAA"
    body = {"encryptedData": encrypted, "iv": iv}
    refused(world.post("opendata", body), 401, 41008)
    refused(world.post("opendata", body, headers={"Authorization": "Basic eDp5"}), 401, 41008)
    refused(world.post("opendata", body, token="made-up"), 401, 42003)
    token = world.login()
    refused(world.post("opendata", body, token=token, appid=OTHER), 401, 42003)
    refused(world.post("opendata", {**body, "code": "c"}, token=token), 400, 40097)
    clock.advance(TTL + 1)
    refused(world.post("opendata", body, token=token), 401, 42003)


def test_a_tampered_session_record_is_no_session(store: Store) -> None:
    sessions = Sessions(store, ttl=TTL, token_factory=lambda: "token-1")
    token = sessions.create(APPID, Session(ALICE, None, "c2Vzc2lvbmtleTEyMzQ1Ng=="))
    assert sessions.load(APPID, token) == Session(ALICE, None, "c2Vzc2lvbmtleTEyMzQ1Ng==")
    assert sessions.load(OTHER, token) is None and sessions.load(APPID, "token-2") is None
    key = Sessions._derive(APPID, token)[0]
    record = json.loads(store.get(key))
    record["sealed"] = base64.b64encode(b"x" * 40).decode()
    store.put(key, json.dumps(record))
    assert sessions.load(APPID, token) is None


class StubAPI:
    """code2session as WeChat answers it for an app bound to an Open Platform account."""

    def code2session(self, appid: str, js_code: str) -> dict[str, str]:
        return {"openid": ALICE, "session_key": "c2Vzc2lvbmtleTEyMzQ1Ng==", "unionid": "u-1"}


class DownStore(Recording):
    def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        raise StoreError("sqlite:///gone.db: unable to open database file")


def stub_client(store: Store) -> falcon.testing.TestClient:
    app = falcon.App()
    config = Settings(apps={APPID: AppConfig(appid=APPID, token="t", secret=SECRET)})
    register(app, settings=config, api=StubAPI(), store=store)  # type: ignore[arg-type]
    return falcon.testing.TestClient(app)


def test_login_passes_the_unionid_on(store: Store) -> None:
    result = stub_client(store).simulate_post(f"/apps/{APPID}/login", json={"code": "c"})
    assert result.json["unionid"] == "u-1" and result.json["openid"] == ALICE


def test_store_down_is_503(store: Store) -> None:
    result = stub_client(DownStore(store)).simulate_post(f"/apps/{APPID}/login",  # type: ignore
                                                         json={"code": "c"})
    assert "gone.db" not in refused(result, 503, -1)


# -- CloudID -----------------------------------------------------------------------------------

def test_cloud_id_round_trip_bound_to_the_session_openid(world: World, clock: Any) -> None:
    token = world.login()
    werun = {"stepInfoList": [{"timestamp": 1_699_900_000, "step": 5000}]}
    cloud_id = world.emulator.cloud_id(APPID, ALICE, werun)
    result = world.post("opendata", {"cloudID": cloud_id}, token=token)
    assert result.status_code == 200, result.text
    assert result.json == {"cloudID": cloud_id, "data": {
        **werun, "watermark": {"timestamp": int(clock()), "appid": APPID}}}
    assert world.emulator.calls("/wxa/getopendata")[-1].params["openid"] == ALICE
    # Bob cannot read Alice's cloudID
    refused(world.post("opendata", {"cloudID": cloud_id}, token=world.login(BOB)), 400, -601006)


def test_cloud_ids_list(world: World) -> None:
    token = world.login()
    ids = [world.emulator.cloud_id(APPID, ALICE, {"n": n}) for n in range(5)]
    result = world.post("opendata", {"cloudIDs": ids}, token=token)
    assert result.status_code == 200, result.text
    assert [item["data"]["n"] for item in result.json["data_list"]] == list(range(5))


def test_cloud_id_expires_after_five_minutes(world: World, clock: Any) -> None:
    token = world.login()
    cloud_id = world.emulator.cloud_id(APPID, ALICE, {"n": 1})
    clock.advance(301)
    errmsg = refused(world.post("opendata", {"cloudID": cloud_id}, token=token), 400, -601006)
    assert "expired" in errmsg


@pytest.mark.parametrize("body", [
    {"cloudIDs": ["c"] * 6}, {"cloudIDs": []}, {"cloudIDs": "c"}, {"cloudIDs": ["c", 1]},
    {"cloudID": ""}, {"cloudID": "c", "cloudIDs": ["c"]}, {"cloudID": "c", "iv": "AAAA"}, {}])
def test_cloud_id_shapes_refused_before_asking_wechat(world: World, body: dict) -> None:
    token = world.login()
    refused(world.post("opendata", body, token=token), 400, 40097)
    assert world.emulator.calls("/wxa/getopendata") == []


# -- phone number ------------------------------------------------------------------------------

def test_phone_round_trip(world: World, clock: Any) -> None:
    code = world.emulator.phone_code(APPID, ALICE, "13800138000")
    result = world.post("phone", {"code": code})
    assert result.status_code == 200, result.text
    assert result.json == {"phoneNumber": "13800138000", "purePhoneNumber": "13800138000",
                           "countryCode": "86",
                           "watermark": {"timestamp": int(clock()), "appid": APPID}}
    refused(world.post("phone", {"code": code}), 401, 40163)


def test_phone_code_bound_to_the_session_openid(world: World) -> None:
    code = world.emulator.phone_code(APPID, ALICE, "+1 2025550123")
    refused(world.post("phone", {"code": code}, token=world.login(BOB)), 401, 40029)
    assert world.emulator.calls("/wxa/business/getuserphonenumber")[-1].body["openid"] == BOB
    result = world.post("phone", {"code": code}, token=world.login(ALICE))
    assert result.json["phoneNumber"] == "+12025550123" and result.json["countryCode"] == "1"


def test_phone_code_missing_or_expired(world: World) -> None:
    refused(world.post("phone", {}), 401, 41008)
    code = world.emulator.phone_code(APPID, ALICE, "13800138000")
    world.emulator.advance(301)
    refused(world.post("phone", {"code": code}), 401, 40029)
    refused(world.post("phone", {"code": "x"}, token="made-up"), 401, 42003)


# -- the edge ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["login", "opendata", "phone"])
@pytest.mark.parametrize("raw, status, errcode", [
    (b"{not json", 400, 47001), (b'["code"]', 400, 47001), (b"\xff\xfe", 400, 47001),
    (b"", 400, 44002), (b"[" * 1000 + b"]" * 1000, 400, 47001),
    (b"[" * 1500 + b"]" * 1500, 413, 45002),
    (b'{"code": "' + b"x" * MAX_BODY + b'"}', 413, 45002)])
def test_bad_bodies(world: World, path: str, raw: bytes, status: int, errcode: int) -> None:
    refused(world.post(path, raw=raw), status, errcode)


@pytest.mark.parametrize("field", ["rawData", "signature", "encryptedData", "code"])
def test_half_a_surrogate_pair_in_a_body_is_refused(world: World, field: str) -> None:
    """It used to reach the rawData hash (a 500); now no text that is not Unicode gets past
    the body."""
    token = world.login()
    encrypted, iv = world.emulator.encrypted_data(APPID, ALICE, {"nickName": "x"})
    body = {"encryptedData": encrypted, "iv": iv, "rawData": "{}", "signature": "0" * 40,
            field: "\ud800" if field != "signature" else "\udfff"}
    result = world.post("opendata", raw=json.dumps(body).encode(), token=token)
    assert refused(result, 400, 47001) == "body is not valid Unicode"


class Unreadable(io.BytesIO):
    """A request body that fails the test when read."""

    def read(self, *_args: Any) -> bytes:
        raise AssertionError("the body was read")

    readline = read1 = read


@pytest.mark.parametrize("content_type", ["application/json", "APPLICATION/JSON",
                                          "application/json; charset=UTF-8",
                                          "Application/Json;charset=\"utf8\""])
def test_json_is_accepted_in_any_case_with_or_without_charset(world: World,
                                                              content_type: str) -> None:
    result = world.post("login", {"code": world.emulator.login_code(APPID, ALICE)},
                        headers={"Content-Type": content_type})
    assert result.status_code == 200, result.text


@pytest.mark.parametrize("path", ["login", "opendata", "phone"])
@pytest.mark.parametrize("content_type, errmsg", [
    *((kind, "Content-Type must be application/json") for kind in (
        None, "", "text/plain", "application/jsonp", "application/x-www-form-urlencoded",
        "text/json", "multipart/form-data; boundary=x")),
    ("application/json; charset=gbk", "JSON must be UTF-8")])
def test_anything_but_json_is_415_before_the_body_is_read(world: World, path: str,
                                                         content_type: str | None,
                                                         errmsg: str) -> None:
    headers = {"Content-Length": "13"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    result = world.client.simulate_post(f"/apps/{APPID}/{path}", headers=headers,
                                        extras={"wsgi.input": Unreadable()})
    assert refused(result, 415, 47001) == errmsg


def test_refusals_are_logged_escaped_and_once_per_kind(world: World,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="webhook")
    for _ in range(50):
        world.post("login", {"code": "c"}, headers={"Content-Type": "text/plain"})
        world.post("login", {"code": "x\n[ERROR] forged"})
        world.post("login", {"code": "c"}, appid="wx%0A[ERROR] forged")
    assert [record.getMessage() for record in caplog.records] == [
        f"login appid={APPID} outcome=refused status=415 errcode=47001 "
        "reason=Content-Type must be application/json",
        f"login appid={APPID} outcome=refused status=401 errcode=40029 reason=invalid code",
        "login appid=- outcome=refused status=404 errcode=40013 reason=unknown appid"]


@pytest.mark.parametrize("path", ["login", "opendata", "phone"])
def test_unknown_appid(world: World, path: str) -> None:
    refused(world.post(path, {"code": "c"}, appid="wx-unknown"), 404, 40013)


@pytest.mark.parametrize("fault, errcode", [({"errcode": -1}, -1), ({"errcode": 45011}, 45011),
                                            ({"http_status": 502}, 502)])
def test_wechat_busy_is_503(world: World, fault: dict, errcode: int) -> None:
    world.emulator.fail_next("/sns/jscode2session", **fault)
    result = world.post("login", {"code": world.emulator.login_code(APPID, ALICE)})
    assert "retry later" in refused(result, 503, errcode)
    assert result.headers["Retry-After"] == "1"


def test_wechat_refusing_our_credentials_is_502(world: World,
                                                caplog: pytest.LogCaptureFixture) -> None:
    world.emulator.register_app(APPID, "rotated-secret")
    result = world.post("login", {"code": world.emulator.login_code(APPID, ALICE)})
    assert "server log" in refused(result, 502, 40125)
    assert "invalid appsecret" in caplog.text


def test_wechat_unreachable_is_503(store: Store, clock: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with requests.Session() as http:
        client, _ = build(store, clock, closed, http)
        refused(client.simulate_post(f"/apps/{APPID}/login", json={"code": "c"}), 503, -1)
        refused(client.simulate_post(f"/apps/{APPID}/phone", json={"code": "c"}), 503, -1)


_FIELDS = ("encryptedData", "iv", "rawData", "signature", "cloudID", "cloudIDs", "code")
# Any character, half surrogate pairs too (sent as JSON \u escapes)
_CHARS = st.characters() | st.characters(categories=["Cs"])
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(_CHARS, max_size=30),
                     lambda inner: st.lists(inner, max_size=7) | st.dictionaries(
                         st.text(max_size=5), inner, max_size=3), max_leaves=10)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(_FIELDS), _JSON | st.just("AAAAAAAAAAAAAAAAAAAAAA==")),
       path=st.sampled_from(["login", "opendata", "phone"]), with_session=st.booleans())
def test_input_never_causes_a_5xx(world: World, body: dict, path: str,
                                  with_session: bool) -> None:
    token = world.login() if with_session else None
    result = world.post(path, raw=json.dumps(body).encode(), token=token)
    assert result.status_code < 500, result.text
    assert result.status_code == 200 or set(result.json) == {"errcode", "errmsg"}


_LATIN1 = st.text(st.characters(max_codepoint=255), max_size=40)
# (an appid holding "/" matches no route: falcon answers that 404 itself)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=64), content_type=_LATIN1 | st.just("application/json"),
       authorization=st.none() | _LATIN1, query=st.binary(max_size=24),
       appid=st.just(APPID.encode()) | st.binary(max_size=12).filter(lambda b: b"/" not in b),
       path=st.sampled_from(["login", "opendata", "phone"]))
def test_any_body_header_query_or_appid_is_answered_never_a_5xx(
        world: World, raw: bytes, content_type: str, authorization: str | None, query: bytes,
        appid: bytes, path: str) -> None:
    headers = {"Content-Type": content_type}
    if authorization is not None:
        headers["Authorization"] = authorization
    result = world.client.simulate_post(f"/apps/{quote_from_bytes(appid, safe='')}/{path}",
                                        headers=headers, body=raw,
                                        query_string="x=" + quote_from_bytes(query))
    assert result.status_code < 500, result.text
    assert set(result.json) == {"errcode", "errmsg"}


def test_no_secret_in_any_answer_or_log_line(world: World,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = world.login()
    encrypted, iv = world.emulator.encrypted_data(APPID, ALICE, {"nickName": "x"})
    raw = '{"nickName":"x"}'
    signature = world.emulator.raw_signature(APPID, ALICE, raw)
    world.post("opendata", {"encryptedData": encrypted, "iv": iv, "rawData": raw,
                            "signature": signature}, token=token)
    world.post("opendata", {"encryptedData": encrypted, "iv": iv, "rawData": raw + "!",
                            "signature": signature}, token=token)
    world.post("opendata", {"encryptedData": encrypted[16:], "iv": iv}, token=token)
    world.post("opendata", {"cloudID": world.emulator.cloud_id(APPID, ALICE, {})}, token=token)
    world.post("phone", {"code": world.emulator.phone_code(APPID, ALICE, "13800138000")},
               token=token)
    world.post("opendata", {"encryptedData": encrypted, "iv": iv}, token=token + "x")
    session_key = world.session_key()
    lines = [record.getMessage() for record in caplog.records]
    assert any("opendata" in line for line in lines)   # the endpoints did log
    for secret in (session_key, token, encrypted, encrypted[16:], iv):
        assert not [line for line in lines if secret in line]
    assert not [body for body in world.bodies if session_key in body]


# -- rate limits -------------------------------------------------------------------------------

def test_bogus_requests_reach_wechat_only_within_the_limits(store: Store, clock: Any) -> None:
    emulator = Emulator(clock=clock)
    emulator.register_app(APPID, SECRET)
    emulator.register_app(OTHER, OTHER_SECRET)
    with serve(emulator.app) as running, requests.Session() as http:
        client, _ = build(store, clock, running.url, http, rate_per_client=0.5,
                          burst_per_client=4, rate_per_app=0.5, burst_per_app=7)

        def post(path: str, forwarded: str, *, appid: str = APPID,
                 peer: str = "127.0.0.1") -> falcon.testing.Result:
            body = {"code": "bogus", **({"cloudID": "c"} if path == "opendata" else {})}
            return client.simulate_post(f"/apps/{appid}/{path}", json=body,
                                        headers={"X-Forwarded-For": forwarded},
                                        remote_addr=peer)

        def relayed() -> int:
            return len(emulator.calls("/sns/jscode2session")) + len(
                emulator.calls("/wxa/business/getuserphonenumber"))

        answers = [post(path, "198.51.100.1") for _ in range(20)
                   for path in ("login", "phone", "opendata")]
        assert [a.status_code for a in answers[:4]] == [401] * 4
        assert relayed() == 4                                     # the client's burst
        for answer in answers[4:]:
            assert "retry in 2 s" in refused(answer, 429, 45011)
            assert answer.headers["Retry-After"] == "2"
        assert post("login", "198.51.100.2").status_code == 401    # another client: its own
        for n in range(3, 8):                                       # the app caps them all
            post("login", f"198.51.100.{n}")
        assert relayed() == 7
        assert "to this app" in refused(post("login", "198.51.100.9"), 429, 45011)
        # a peer that is no trusted proxy is the client, whatever it says it forwards
        for n in range(6):
            post("login", f"192.0.2.{n}", appid=OTHER, peer="203.0.113.5")
        assert len(emulator.calls("/sns/jscode2session", appid=OTHER)) == 4
