"""The WeChat API emulator: token rotation, send windows, typing, media, login and open data,
faults, recording, the HTTP control plane, serve() and ``wxpush emulator``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import falcon.testing
import pytest
import requests
from Crypto.Cipher import AES
from Crypto.Util.Padding import unpad

from webhook.push.messages import EnterSessionEvent, TextMessage
from webhook.testing import Emulator, EmulatorControl, FakeClock, serve
from webhook.testing.emulator import control as control_plane

APPID, SECRET, OPENID = "wx0000000000000001", "s3cret", "o_user_1"
OTHER_APPID, OTHER_SECRET = "wx0000000000000002", "other"
SEND = "/cgi-bin/message/custom/send"
TYPING = "/cgi-bin/message/custom/business/typing"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> Emulator:
    emulator = Emulator(clock=clock, seed=7)
    emulator.register_app(APPID, SECRET)
    emulator.register_app(OTHER_APPID, OTHER_SECRET)
    return emulator


@pytest.fixture
def client(emu: Emulator) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(emu.app)


def fetch(client: falcon.testing.TestClient, appid: str = APPID, secret: str = SECRET) -> str:
    answer = client.simulate_get("/cgi-bin/token", params={
        "grant_type": "client_credential", "appid": appid, "secret": secret}).json
    return answer["access_token"]


def stable(client: falcon.testing.TestClient, *, force: bool = False) -> dict[str, Any]:
    return client.simulate_post("/cgi-bin/stable_token", json={
        "grant_type": "client_credential", "appid": APPID, "secret": SECRET,
        "force_refresh": force}).json


def post(client: falcon.testing.TestClient, path: str, token: str, body: Any) -> dict[str, Any]:
    return client.simulate_post(path, params={"access_token": token}, json=body).json


def send_text(client: falcon.testing.TestClient, token: str, touser: str = OPENID) -> int:
    return post(client, SEND, token, {"touser": touser, "msgtype": "text",
                                      "text": {"content": "hi"}})["errcode"]


def auth(client: falcon.testing.TestClient, token: str) -> int:
    """The errcode of an authenticated call that fails after the token check (40007)."""
    return client.simulate_get("/cgi-bin/media/get", params={
        "access_token": token, "media_id": "nope"}).json["errcode"]


def upload(client: falcon.testing.TestClient, token: str, data: bytes = b"\xff\xd8jpeg",
           kind: str = "image") -> dict[str, Any]:
    prepared = requests.Request("POST", "http://x/", files={
        "media": ("cat.jpg", data, "image/jpeg")}).prepare()
    return client.simulate_post("/cgi-bin/media/upload", params={"access_token": token,
                                                                 "type": kind},
                                body=prepared.body,
                                headers={"Content-Type": prepared.headers["Content-Type"]}).json


def user_says(emu: Emulator, openid: str = OPENID, appid: str = APPID) -> None:
    emu.notify_push(appid, {"FromUserName": openid, "MsgType": "text", "Content": "hello"})


# --- access_token ----------------------------------------------------------------------------

def test_token_answer_has_a_long_random_token_and_no_errcode(client: falcon.testing.TestClient):
    answer = client.simulate_get("/cgi-bin/token", params={
        "grant_type": "client_credential", "appid": APPID, "secret": SECRET}).json
    assert set(answer) == {"access_token", "expires_in"}
    assert answer["expires_in"] == 7200 and len(answer["access_token"]) >= 64
    assert fetch(client) != answer["access_token"]


@pytest.mark.parametrize("params, errcode", [
    ({"grant_type": "password", "appid": APPID, "secret": SECRET}, 40002),
    ({"grant_type": "client_credential", "appid": "wxnope", "secret": SECRET}, 40013),
    ({"grant_type": "client_credential", "appid": APPID, "secret": "wrong"}, 40125),
    ({"grant_type": "client_credential", "appid": APPID}, 41004),
    ({"grant_type": "client_credential", "secret": SECRET}, 41002),
])
def test_token_refuses_bad_credentials(client, params, errcode):
    assert client.simulate_get("/cgi-bin/token", params=params).json["errcode"] == errcode


def test_each_token_fetch_rotates_and_the_previous_lives_five_minutes(client, clock):
    t1, t2 = fetch(client), fetch(client)
    assert auth(client, t1) == auth(client, t2) == 40007      # both accepted
    t3 = fetch(client)
    assert auth(client, t1) == 40001                          # older than previous: gone
    assert auth(client, t2) == 40007
    clock.advance(301)
    assert auth(client, t2) == 40001 and auth(client, t3) == 40007
    clock.advance(7200)
    assert auth(client, t3) == 42001


def test_token_missing_or_unknown(client):
    assert client.simulate_get("/cgi-bin/media/get").json["errcode"] == 41001
    assert auth(client, "garbage") == 40001


def test_stable_token_is_the_same_until_five_minutes_before_expiry(client, clock, emu):
    first = stable(client)
    clock.advance(3600)
    again = stable(client)
    assert again["access_token"] == first["access_token"] and again["expires_in"] == 3600
    clock.advance(3600 - 299)                                  # inside the last 5 minutes
    rotated = stable(client)
    assert rotated["access_token"] != first["access_token"] and rotated["expires_in"] == 7200
    assert auth(client, first["access_token"]) == 40007        # overlap: old still valid
    clock.advance(300)
    assert auth(client, first["access_token"]) == 42001
    assert auth(client, rotated["access_token"]) == 40007
    assert emu.token_fetches(APPID) == {"token": 0, "stable_token": 3, "stable_issued": 2,
                                        "forced": 0}


def test_stable_token_never_returns_less_than_five_minutes(client, clock):
    stable(client)
    for _ in range(40):
        clock.advance(997)
        assert stable(client)["expires_in"] >= 300


def test_force_refresh_invalidates_previous_and_is_rate_limited(client, clock, emu):
    old = stable(client)["access_token"]
    forced = stable(client, force=True)["access_token"]
    assert forced != old and auth(client, old) == 40001
    clock.advance(10)
    assert stable(client, force=True)["access_token"] == forced   # < 30 s apart: no refresh
    for _ in range(19):
        clock.advance(30)
        stable(client, force=True)
    assert emu.token_fetches(APPID)["forced"] == 20
    clock.advance(30)
    current = stable(client, force=True)["access_token"]         # 21st of the day: refused
    assert stable(client)["access_token"] == current
    assert emu.token_fetches(APPID)["forced"] == 20
    clock.advance(86400)
    assert stable(client, force=True)["access_token"] != current


def test_classic_and_stable_tokens_are_isolated(client):
    s = stable(client)["access_token"]
    fetch(client), fetch(client), fetch(client)
    assert auth(client, s) == 40007


def test_stable_token_wants_post_json(client):
    assert client.simulate_get("/cgi-bin/stable_token").json["errcode"] == 43002
    assert client.simulate_post("/cgi-bin/stable_token", body="x").json["errcode"] == 47001
    assert client.simulate_post("/cgi-bin/stable_token").json["errcode"] == 44002


# --- custom/send -----------------------------------------------------------------------------

def test_send_needs_an_openid_known_to_the_app(client, emu):
    token = fetch(client)
    assert send_text(client, token) == 40003
    user_says(emu, appid=OTHER_APPID)
    assert send_text(client, token) == 40003
    user_says(emu)
    assert send_text(client, token) == 0
    assert emu.sent() == [(APPID, OPENID, {"msgtype": "text", "text": {"content": "hi"}})]
    assert emu.sent(OTHER_APPID) == []


def test_user_message_opens_five_sends_for_48_hours(client, emu, clock):
    token = fetch(client)
    user_says(emu)
    assert [send_text(client, token) for _ in range(6)] == [0] * 5 + [45047]
    user_says(emu)                                             # a new message: a fresh count
    assert send_text(client, token) == 0
    clock.advance(48 * 3600)
    token = fetch(client)
    assert send_text(client, token) == 45015


def test_enter_session_opens_two_sends_for_one_minute(client, emu, clock):
    token = fetch(client)
    enter = EnterSessionEvent(to_user="gh_x", from_user=OPENID, create_time=int(clock()))
    emu.notify_push(APPID, enter)
    assert [send_text(client, token) for _ in range(3)] == [0, 0, 45047]
    emu.notify_push(APPID, enter)                              # a new window, fresh count
    assert send_text(client, token) == 0
    clock.advance(61)
    assert send_text(client, token) == 45015


def test_enter_window_is_used_before_the_message_window(client, emu, clock):
    token = fetch(client)
    emu.notify_push(APPID, TextMessage(to_user="gh_x", from_user=OPENID,
                                       create_time=int(clock()), content="hi", msg_id=1))
    emu.notify_push(APPID, {"FromUserName": OPENID, "MsgType": "event",
                            "Event": "user_enter_tempsession"})
    assert [send_text(client, token) for _ in range(2)] == [0, 0]
    clock.advance(61)
    assert [send_text(client, token) for _ in range(6)] == [0] * 5 + [45047]


def test_windows_start_at_the_push_create_time(client, emu, clock):
    token = fetch(client)
    emu.notify_push(APPID, {"FromUserName": OPENID, "MsgType": "text",
                            "CreateTime": str(int(clock()) - 48 * 3600)})
    assert send_text(client, token) == 45015                   # written 48 h ago: closed
    emu.notify_push(APPID, {"FromUserName": OPENID, "MsgType": "text",
                            "CreateTime": int(clock()) + 3600})  # from the future: now
    clock.advance(48 * 3600 - 1)
    assert send_text(client, fetch(client)) == 0


def test_other_events_learn_the_openid_but_open_no_window(client, emu):
    token = fetch(client)
    emu.notify_push(APPID, {"FromUserName": OPENID, "MsgType": "event", "Event": "debug_demo"})
    assert send_text(client, token) == 45015


@pytest.mark.parametrize("body, errcode", [
    ({"touser": OPENID, "msgtype": "voice", "voice": {}}, 40008),
    ({"touser": OPENID, "msgtype": "text"}, 47001),
    ({"touser": OPENID, "msgtype": "text", "text": {"content": ""}}, 47001),
    ({"touser": OPENID, "msgtype": "image", "image": {"path": "/tmp/x.png"}}, 47001),
    ({"touser": OPENID, "msgtype": "image", "image": {"media_id": "unknown"}}, 40007),
    ({"touser": OPENID, "msgtype": "link", "link": {"title": "t", "url": "u"}}, 47001),
    ({"touser": OPENID, "msgtype": "link",
      "link": {"title": "t", "description": "", "url": "https://x", "thumb_url": ""}}, 0),
    ({"touser": OPENID, "msgtype": "miniprogrampage",
      "miniprogrampage": {"title": "t", "pagepath": "pages/a", "thumb_media_id": "x"}}, 40007),
    ({"msgtype": "text", "text": {"content": "hi"}}, 40003),
    ([1, 2], 47001),
])
def test_send_validates_the_payload(client, emu, body, errcode):
    user_says(emu)
    assert post(client, SEND, fetch(client), body)["errcode"] == errcode


def test_send_body_errors_and_method(client, emu):
    token = fetch(client)
    user_says(emu)
    params = {"access_token": token}
    assert client.simulate_post(SEND, params=params, body="{nope").json["errcode"] == 47001
    assert client.simulate_post(SEND, params=params).json["errcode"] == 44002
    assert client.simulate_get(SEND, params=params).json["errcode"] == 43002


def test_send_image_and_card_with_uploaded_media(client, emu):
    token = fetch(client)
    user_says(emu)
    media_id = upload(client, token)["media_id"]
    assert post(client, SEND, token, {"touser": OPENID, "msgtype": "image",
                                      "image": {"media_id": media_id}})["errcode"] == 0
    card = {"title": "t", "pagepath": "pages/index?x=1", "thumb_media_id": media_id}
    assert post(client, SEND, token, {"touser": OPENID, "msgtype": "miniprogrampage",
                                      "miniprogrampage": card})["errcode"] == 0


def test_calls_are_recorded_without_the_access_token(client, emu, clock):
    token = fetch(client)
    user_says(emu)
    send_text(client, token)
    call = emu.calls(SEND)[0]
    assert call.params == {} and call.body["touser"] == OPENID and call.errcode == 0
    assert call.appid == APPID and call.time == clock() and call.status == 200
    assert token not in json.dumps([c.to_json() for c in emu.calls()])
    assert [c.path for c in emu.calls()] == ["/cgi-bin/token", SEND]
    assert emu.calls(appid=OTHER_APPID) == []


# --- typing ----------------------------------------------------------------------------------

def test_typing_rules(client, emu, clock):
    token = fetch(client)
    typing = lambda command: post(client, TYPING, token,  # noqa: E731
                                  {"touser": OPENID, "command": command})["errcode"]
    assert typing("Typing") == 40003
    user_says(emu)
    assert typing("Typing") == 0
    assert typing("Typing") == 45081                           # already typing
    assert typing("Dance") == 45072
    assert typing("CancelTyping") == 0
    assert typing("Typing") == 0
    assert send_text(client, token) == 0                       # sending cancels typing
    assert typing("Typing") == 0
    clock.advance(16)                                          # typing lasts 15 s
    assert typing("Typing") == 0
    clock.advance(31)                                          # nothing exchanged for 30 s
    assert typing("Typing") == 45080


# --- media -----------------------------------------------------------------------------------

def test_media_upload_and_get(client, emu, clock):
    token = fetch(client)
    answer = upload(client, token, b"\xff\xd8 bytes")
    assert answer["type"] == "image" and answer["created_at"] == int(clock())
    got = client.simulate_get("/cgi-bin/media/get", params={"access_token": token,
                                                            "media_id": answer["media_id"]})
    assert got.content == b"\xff\xd8 bytes" and got.headers["content-type"] == "image/jpeg"
    assert answer["media_id"] in got.headers["content-disposition"]
    other = fetch(client, OTHER_APPID, OTHER_SECRET)
    assert client.simulate_get("/cgi-bin/media/get", params={
        "access_token": other, "media_id": answer["media_id"]}).json["errcode"] == 40007
    assert emu.calls("/cgi-bin/media/upload")[0].body == {
        "media": {"filename": "cat.jpg", "content_type": "image/jpeg", "size": 8}}
    clock.advance(3 * 86400)
    token = fetch(client)
    assert client.simulate_get("/cgi-bin/media/get", params={
        "access_token": token, "media_id": answer["media_id"]}).json["errcode"] == 40007


def test_media_upload_errors(client):
    token = fetch(client)
    assert upload(client, token, kind="voice")["errcode"] == 40004
    assert client.simulate_post("/cgi-bin/media/upload", params={
        "access_token": token, "type": "image"}).json["errcode"] == 41005


# --- login and open data ---------------------------------------------------------------------

def code2session(client: falcon.testing.TestClient, code: str,
                 secret: str = SECRET) -> dict[str, Any]:
    return client.simulate_get("/sns/jscode2session", params={
        "appid": APPID, "secret": secret, "js_code": code,
        "grant_type": "authorization_code"}).json


def open_data(encrypted: str, iv: str, session_key: str) -> dict[str, Any]:
    cipher = AES.new(base64.b64decode(session_key), AES.MODE_CBC, base64.b64decode(iv))
    return json.loads(unpad(cipher.decrypt(base64.b64decode(encrypted)), 16))


def test_login_codes_are_single_use_and_short_lived(client, emu, clock):
    code = emu.login_code(APPID, OPENID)
    assert code2session(client, code, secret="bad")["errcode"] == 40125
    session = code2session(client, code)
    assert session["openid"] == OPENID and len(base64.b64decode(session["session_key"])) == 16
    assert "errcode" not in session
    assert code2session(client, code)["errcode"] == 40163
    assert code2session(client, "made-up")["errcode"] == 40029
    late = emu.login_code(APPID, OPENID)
    clock.advance(301)
    assert code2session(client, late)["errcode"] == 40029
    assert send_text(client, fetch(client)) == 45015          # login: known, but no window


def test_encrypted_data_uses_the_current_session_key(client, emu, clock):
    with pytest.raises(ValueError):
        emu.encrypted_data(APPID, OPENID, {"nickName": "x"})
    first = code2session(client, emu.login_code(APPID, OPENID))["session_key"]
    data, iv = emu.encrypted_data(APPID, OPENID, {"nickName": "小明"})
    assert open_data(data, iv, first) == {
        "nickName": "小明", "watermark": {"timestamp": int(clock()), "appid": APPID}}
    raw = '{"nickName":"x"}'
    assert emu.raw_signature(APPID, OPENID, raw) == hashlib.sha1(
        (raw + first).encode()).hexdigest()
    second = code2session(client, emu.login_code(APPID, OPENID))["session_key"]
    assert second != first
    data, iv = emu.encrypted_data(APPID, OPENID, {"nickName": "x"})
    assert open_data(data, iv, second)["nickName"] == "x"


def test_cloud_ids_expire_after_five_minutes(client, emu, clock):
    token = fetch(client)
    cid = emu.cloud_id(APPID, OPENID, {"stepInfoList": [{"step": 100}]})
    answer = post(client, "/wxa/getopendata", token, {"cloudid_list": [cid, "unknown"]})
    fresh, unknown = (json.loads(item["json"]) for item in answer["data_list"])
    assert answer["errcode"] == 0 and answer["data_list"][0]["cloud_id"] == cid
    assert fresh == {"cloudID": cid, "data": {"stepInfoList": [{"step": 100}], "watermark": {
        "timestamp": int(clock()), "appid": APPID}}}
    assert unknown["errCode"] == -601006
    other = fetch(client, OTHER_APPID, OTHER_SECRET)
    assert json.loads(post(client, "/wxa/getopendata", other, {"cloudid_list": [cid]})[
        "data_list"][0]["json"])["errCode"] == -601006
    clock.advance(300)
    token = fetch(client)
    item = post(client, "/wxa/getopendata", token, {"cloudid_list": [cid]})["data_list"][0]
    assert json.loads(item["json"]) == {"cloudID": cid, "errCode": -601006,
                                        "errMsg": "cloudID expired."}
    assert post(client, "/wxa/getopendata", token, {"cloudid_list": []})["errcode"] == 47001


def test_phone_codes(client, emu, clock):
    token = fetch(client)
    path = "/wxa/business/getuserphonenumber"
    code = emu.phone_code(APPID, OPENID, "13800138000")
    assert post(client, path, token, {"code": code, "openid": "o_other"})["errcode"] == 40029
    info = post(client, path, token, {"code": code, "openid": OPENID})["phone_info"]
    assert info == {"phoneNumber": "13800138000", "purePhoneNumber": "13800138000",
                    "countryCode": "86", "watermark": {"timestamp": int(clock()),
                                                       "appid": APPID}}
    assert post(client, path, token, {"code": code})["errcode"] == 40163
    foreign = emu.phone_code(APPID, OPENID, "+1 2025550123")
    assert post(client, path, token, {"code": foreign})["phone_info"]["phoneNumber"] == \
        "+12025550123"
    late = emu.phone_code(APPID, OPENID, "13800138000")
    clock.advance(301)
    token = fetch(client)
    assert post(client, path, token, {"code": late})["errcode"] == 40029
    assert post(client, path, token, {})["errcode"] == 41008
    with pytest.raises(ValueError):
        emu.phone_code(APPID, OPENID, "call me")


# --- faults, unknown paths, reset ------------------------------------------------------------

def test_unknown_paths_fail_loudly_and_are_recorded(client, emu):
    answer = client.simulate_post("/cgi-bin/message/custom/typing", params={"access_token": "t"})
    assert answer.status_code == 404 and answer.json["errcode"] == 40066
    assert emu.calls()[0].path == "/cgi-bin/message/custom/typing"
    assert emu.calls()[0].params == {}


def test_fault_rates_hit_api_calls_only(client, emu):
    emu.set_faults(errcode_rate=1.0)
    assert client.simulate_get("/cgi-bin/token").json == {"errcode": -1,
                                                          "errmsg": "system error"}
    assert client.simulate_get("/_emulator/").json["ok"] is True
    emu.set_faults(http502_rate=1.0)
    answer = client.simulate_get("/cgi-bin/token")
    assert answer.status_code == 502 and answer.headers["content-type"] == "text/html"
    assert emu.calls()[-1].status == 502 and emu.calls()[-1].errcode is None
    emu.set_faults(force_40001_rate=1.0)
    token = fetch(client)                                      # no access_token: not forced
    assert auth(client, token) == 40001
    emu.set_faults(errcode_rate=1.0, paths=("/cgi-bin/media/",))
    assert auth(client, fetch(client)) == -1
    with pytest.raises(ValueError):
        emu.set_faults(errcode_rate=2)


def test_faults_are_reproducible_from_the_seed(clock):
    def run() -> list[int]:
        emulator = Emulator(clock=clock, seed=3)
        emulator.register_app(APPID, SECRET)
        emulator.set_faults(errcode_rate=0.5)
        client = falcon.testing.TestClient(emulator.app)
        return [client.simulate_get("/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        ).json.get("errcode", 0) for _ in range(40)]

    first = run()
    assert first == run() and 10 < first.count(-1) < 30


def test_delay_faults_sleep_outside_the_lock_and_the_request_is_in_flight_meanwhile(clock):
    slept: list[tuple[float, int, int]] = []
    emulator = Emulator(clock=clock, sleep=lambda seconds: slept.append(
        (seconds, emulator.in_flight("/cgi-bin/token"), len(emulator.calls()))))
    emulator.set_faults(delay_rate=1.0, delay_seconds=6.0)
    falcon.testing.TestClient(emulator.app).simulate_get("/cgi-bin/token")
    assert slept == [(6.0, 1, 0)]          # received, not yet answered nor recorded
    assert emulator.in_flight("/cgi-bin/token") == 0 and len(emulator.calls()) == 1


def test_latency_is_added_to_every_answer_of_its_paths(clock):
    slept: list[float] = []
    emulator = Emulator(clock=clock, sleep=slept.append)
    emulator.register_app(APPID, SECRET)
    client = falcon.testing.TestClient(emulator.app)
    emulator.set_faults(latency=0.05)
    token = fetch(client)
    assert send_text(client, token) == 40003               # a refusal waits as long
    client.simulate_get("/_emulator/")                     # the control plane never waits
    assert slept == [0.05, 0.05]
    slept.clear()
    emulator.set_faults(latency=0.2, paths=(SEND,))
    emulator.fail_next(SEND, errcode=-1)
    assert send_text(client, token) == -1                  # a queued failure waits too
    fetch(client)
    assert slept == [0.2]
    slept.clear()
    emulator.set_faults(latency=0.2, delay_rate=1.0, delay_seconds=6.0)
    fetch(client)
    assert slept == [6.2]                                  # a delay fault comes on top
    slept.clear()
    emulator.set_faults()                                  # 0 by default: no wait
    fetch(client)
    assert slept == []
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="latency"):
            emulator.set_faults(latency=bad)


def test_latency_holds_no_lock_so_sends_in_flight_overlap():
    """64 sends at 200 ms each, from 64 connections at once: each send's wait begins only when
    all 64 are waiting, which a lock held across the wait would never allow (the barrier would
    break after 10 s and the sends fail)."""
    everyone = threading.Barrier(64, timeout=10)
    emulator = Emulator(sleep=lambda seconds: (
        peaks.append(emulator.in_flight(SEND)), everyone.wait(), time.sleep(seconds)))
    peaks: list[int] = []
    emulator.register_app(APPID, SECRET)
    users = [f"o_overlap_{i:02d}" for i in range(64)]
    for user in users:
        user_says(emulator, user)
    errcodes = []
    with serve(emulator.app) as server:
        token = requests.get(f"{server.url}/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        ).json()["access_token"]
        emulator.set_faults(latency=0.2)

        def send(user: str) -> None:
            with requests.Session() as http:
                errcodes.append(http.post(f"{server.url}{SEND}", params={
                    "access_token": token}, json={"touser": user, "msgtype": "text",
                                                  "text": {"content": "hi"}}
                ).json()["errcode"])

        threads = [threading.Thread(target=send, args=(user,)) for user in users]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not everyone.broken
    assert errcodes == [0] * 64 and len(emulator.sent(APPID)) == 64
    assert max(peaks) == 64                  # the last to arrive found every other waiting


def test_fail_next_answers_queued_failures(client, emu):
    emu.fail_next("/cgi-bin/token", errcode=45009, times=2)
    emu.fail_next("/cgi-bin/token", http_status=503)
    codes = [client.simulate_get("/cgi-bin/token") for _ in range(3)]
    assert [c.json["errcode"] for c in codes[:2]] == [45009, 45009]
    assert codes[2].status_code == 503 and b"503 Service Unavailable" in codes[2].content
    assert fetch(client)
    with pytest.raises(ValueError):
        emu.fail_next("/x")
    with pytest.raises(ValueError):
        emu.fail_next("/x", http_status=999)


def test_reset_keeps_apps_and_forgets_the_rest(client, emu, clock):
    token = fetch(client)
    user_says(emu)
    emu.advance(100)
    emu.reset()
    assert emu.calls() == [] and emu.now() == clock()
    assert auth(client, token) == 40001
    assert send_text(client, fetch(client)) == 40003
    assert emu.token_fetches(APPID)["token"] == 1
    with pytest.raises(ValueError):
        emu.token_fetches("wxnope")
    with pytest.raises(ValueError):
        user_says(emu, appid="wxnope")


# --- threads, HTTP control plane, serve, CLI -------------------------------------------------

def test_concurrent_calls_keep_counts_exact(emu):
    user_says(emu)
    with serve(emu.app) as server:
        session_token = requests.get(f"{server.url}/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": APPID, "secret": SECRET}).json()
        results: list[int] = []

        def worker() -> None:
            with requests.Session() as http:
                for _ in range(5):
                    results.append(http.post(f"{server.url}{SEND}", params={
                        "access_token": session_token["access_token"]}, json={
                        "touser": OPENID, "msgtype": "text", "text": {"content": "x"}}
                    ).json()["errcode"])

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(results) == [0] * 5 + [45047] * 35
    assert len(emu.sent()) == 5 and len(emu.calls(SEND)) == 40


def test_control_plane_over_http(emu, clock):
    with serve(emu.app) as server:
        control = EmulatorControl(server.url)
        assert control.ping() == clock()
        control.register_app("wxremote", "sec")
        token = requests.get(f"{server.url}/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": "wxremote", "secret": "sec"}
        ).json()["access_token"]
        control.notify_push("wxremote", TextMessage(to_user="gh", from_user="o1",
                                                    create_time=int(clock()), content="hi",
                                                    msg_id=9))
        assert requests.post(f"{server.url}{SEND}", params={"access_token": token}, json={
            "touser": "o1", "msgtype": "text", "text": {"content": "yo"}}).json()["errcode"] == 0
        assert control.sent("wxremote") == [("wxremote", "o1", {"msgtype": "text",
                                                                "text": {"content": "yo"}})]
        assert [c.path for c in control.calls(appid="wxremote")] == ["/cgi-bin/token", SEND]
        assert control.calls(SEND)[0] == emu.calls(SEND)[0]
        assert control.token_fetches("wxremote")["token"] == 1
        code = control.login_code(APPID, OPENID)
        session = requests.get(f"{server.url}/sns/jscode2session", params={
            "appid": APPID, "secret": SECRET, "js_code": code,
            "grant_type": "authorization_code"}).json()
        data, iv = control.encrypted_data(APPID, OPENID, {"a": 1})
        assert open_data(data, iv, session["session_key"])["a"] == 1
        assert control.raw_signature(APPID, OPENID, "r") == emu.raw_signature(APPID, OPENID, "r")
        assert control.cloud_id(APPID, OPENID, {"b": 2}) in emu.grants
        assert control.phone_code(APPID, OPENID, "13800138000") in emu.grants
        control.set_faults(errcode_rate=1.0, paths=["/sns/"])
        assert emu._faults.paths == ("/sns/",)
        control.fail_next(SEND, errcode=-1)
        control.advance(60)
        assert emu.now() == clock() + 60
        control.reset()
        assert emu.calls() == [] and emu.now() == clock()
        with pytest.raises(ValueError, match="unknown appid"):
            control.token_fetches("wxnope")
        with pytest.raises(ValueError, match="404"):
            control._call("POST", "/nothing", {})
        assert requests.post(f"{server.url}/_emulator/apps", data="[]").status_code == 400
        control.close()


def test_an_unknown_control_route_lists_the_real_ones():
    emu = Emulator()
    with serve(emu.app) as server:
        answer = requests.post(f"{server.url}/_emulator/login", json={}, timeout=5)
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error.startswith("no control route POST /_emulator/login; the routes: ")
    for route in ("POST /_emulator/login_code", "POST /_emulator/encrypted_data",
                  "POST /_emulator/cloud_id", "POST /_emulator/phone_code", "GET /_emulator/sent"):
        assert route in error
    assert answer.json()["routes"] == control_plane.routes()


def test_the_documented_control_routes_are_the_routes():
    """The module's docstring is where the routes are documented, with their arguments, and
    what an unknown route and ``wxpush emulator`` list."""
    documented = {" ".join(route.split()[:2]) for route in control_plane.routes()}
    served = {f"{method} /_emulator{path}" for method, table in (("GET", control_plane._GET),
                                                                ("POST", control_plane._POST))
              for path in table}
    assert documented == served
    assert all(": " in route for route in control_plane.routes())    # each says what it does


def test_latency_over_the_control_plane(clock):
    slept: list[float] = []
    emulator = Emulator(clock=clock, sleep=slept.append)
    emulator.register_app(APPID, SECRET)
    with serve(emulator.app) as server, EmulatorControl(server.url) as control:
        control.set_faults(latency=0.15, paths=("/cgi-bin/token",))
        assert requests.get(f"{server.url}/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        ).json()["expires_in"] == 7200
        requests.get(f"{server.url}/sns/jscode2session")
        assert slept == [0.15]
        for bad in ({"latency": -1}, {"latency": "slow"}, {"latency": None}):
            answer = requests.post(f"{server.url}/_emulator/faults", json=bad)
            assert answer.status_code == 400 and "error" in answer.json(), bad
        assert emulator._faults.latency == 0.15               # a refused change changes nothing
        control.set_faults()
        assert emulator._faults.latency == 0.0


def test_bad_fault_settings_are_refused_and_change_nothing(emu):
    emu.set_faults(errcode_rate=0.5, paths=("/sns/",))
    for bad in ({"delay_seconds": -1.0}, {"delay_seconds": float("nan")}, {"paths": "/sns/"},
                {"paths": ("/sns/", 1)}):
        with pytest.raises(ValueError):
            emu.set_faults(**bad)
    with serve(emu.app) as server:
        for bad in ({"paths": "/cgi-bin/"}, {"paths": [1]}, {"delay_seconds": -1},
                    {"delay_seconds": "NaN"}):
            answer = requests.post(f"{server.url}/_emulator/faults", json=bad)
            assert answer.status_code == 400 and "error" in answer.json(), bad
    assert emu._faults.errcode_rate == 0.5 and emu._faults.paths == ("/sns/",)


def test_serve_stops_and_frees_its_port():
    server = serve(lambda environ, start: (start("200 OK", []), [b"ok"])[1])
    assert requests.get(server.url).text == "ok"
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url, timeout=1)


@pytest.mark.slow
def test_wxpush_emulator_command_runs_until_sigterm():
    code = "import sys; from webhook.cli import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "emulator", "--app", f"{APPID}:{SECRET}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        line = proc.stdout.readline()
        assert line.startswith("wxpush emulator listening on http://127.0.0.1:"), \
            line + proc.stderr.read()
        url = line.split()[-1]
        listed = [proc.stdout.readline() for _ in range(len(control_plane.routes()) + 1)]
        assert listed[0] == f'WeChat\'s API for api_base = "{url}"; driven through these routes:\n'
        assert [route.strip() for route in listed[1:]] == control_plane.routes()
        answer = requests.get(f"{url}/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": APPID, "secret": SECRET}, timeout=5)
        assert answer.json()["expires_in"] == 7200
        assert EmulatorControl(url).token_fetches(APPID)["token"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_served_over_http_1_1_with_keep_alive():
    """Like WeChat's API servers: requests follow one another on one connection, until the
    client asks to close it."""
    emulator = Emulator()
    emulator.register_app("wxka", "secret")
    with serve(emulator.app) as server, socket.create_connection(("127.0.0.1", server.port),
                                                                  timeout=5) as sock:
        reader = sock.makefile("rb")
        for close in (False, False, True):
            sock.sendall(stable_token_request(b"wxka", close=close))
            status, body = read_answer(reader)
            assert status == b"HTTP/1.1 200 OK" and "access_token" in json.loads(body)
        assert reader.read() == b""          # closed after the third, as asked
    assert len(emulator.calls("/cgi-bin/stable_token")) == 3


def test_serves_128_kept_alive_connections_at_once():
    """Many senders' connections open together and each stays open between its requests:
    none is refused, reset or left waiting in a full accept queue (Linux sends a dropped SYN
    again after 1 s, so such a connect takes a second or more), and their answers overlap."""
    emulator = Emulator()
    emulator.register_app("wxka", "secret")
    emulator.set_faults(latency=0.05)
    opened, answers, errors, connects = threading.Barrier(129), [], [], []

    def client(port: int) -> None:
        try:
            began = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                connects.append(time.monotonic() - began)
                opened.wait(10)
                reader = sock.makefile("rb")
                for close in (False, False, True):
                    sock.sendall(stable_token_request(b"wxka", close=close))
                    answers.append(read_answer(reader)[0])
                assert reader.read() == b""
        except (OSError, AssertionError, threading.BrokenBarrierError) as exc:
            errors.append(repr(exc))

    with serve(emulator.app) as server:
        threads = [threading.Thread(target=client, args=(server.port,)) for _ in range(128)]
        for thread in threads:
            thread.start()
        opened.wait(10)                      # all 128 connected before any request
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert max(connects) < 1.0, max(connects)
    assert answers == [b"HTTP/1.1 200 OK"] * 384
    assert len(emulator.calls("/cgi-bin/stable_token")) == 384


def stable_token_request(appid: bytes, *, close: bool) -> bytes:
    body = b'{"grant_type":"client_credential","appid":"%s","secret":"secret"}' % appid
    return (b"POST /cgi-bin/stable_token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), b"Connection: close\r\n" if close else b"", body))


def read_answer(reader: Any) -> tuple[bytes, bytes]:
    """(status line, body) of one HTTP/1.1 answer with a Content-Length."""
    status = reader.readline().rstrip(b"\r\n")
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, reader.read(int(headers.get("content-length", 0)))
