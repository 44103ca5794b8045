"""PushBuilder produces pushes exactly as WeChat does in all six console settings, decodable by
webhook.push.receive; and ``wxpush push`` delivers them (with retries, config and emulator)."""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests

from webhook.cli import push as push_cli
from webhook.config.settings import FORMATS, MODES, AppConfig
from webhook.errors import BadSignature, ConfigError, MalformedRequest, RequestRejected
from webhook.push.crypto import Cipher
from webhook.push.messages import TextMessage
from webhook.push.parsing import message_fields, parse_body, render, transfer_fields
from webhook.push.receive import keyring_for, open_push, seal, verify_url
from webhook.push.signature import signature
from webhook.testing import (BuiltPush, Emulator, FakeClock, PushBuilder, RunningServer, factories,
                             serve)

APPID, TOKEN, SECRET = "wx2c2769f8efd9abc2", "spamtest", "sec"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SETTINGS = [(fmt, mode) for fmt in FORMATS for mode in MODES]
ENCRYPTED_QUERY = ["signature", "timestamp", "nonce", "openid", "encrypt_type", "msg_signature"]


def config(fmt: str = "xml", mode: str = "safe") -> AppConfig:
    return AppConfig(appid=APPID, token=TOKEN, secret=SECRET, encoding_aes_key=KEY, format=fmt,
                     mode=mode)


def builder(fmt: str = "xml", mode: str = "safe", *, seed: int = 0,
            clock: Callable[[], float] | None = None) -> PushBuilder:
    return PushBuilder.for_app(config(fmt, mode), clock=clock or FakeClock(),
                               random=random.Random(seed))


def opened(app: AppConfig, push: BuiltPush, now: float = 1_700_000_000.0) -> Any:
    return open_push(app, keyring_for(app), push.query, push.body, now=now, tolerance=300)


def samples(b: PushBuilder) -> list[BuiltPush]:
    return [b.text("你好 ]]> <b>&amp;", msg_id=2**63 - 1), b.image("MEDIA_ID"),
            b.miniprogram_page("Title", "pages/index?x=1", thumb_media_id="T"),
            b.event("debug_demo", debug_str="hello world"),
            b.enter_session("o_other", session_from="faq")]


# --- the six settings ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, mode", SETTINGS)
def test_every_setting_opens_with_receive(fmt: str, mode: str):
    for push in samples(builder(fmt, mode)):
        message = opened(config(fmt, mode), push).message
        assert message_fields(message) == push.fields
        assert message.to_user == "gh_0123456789ab"


@pytest.mark.parametrize("fmt, mode", SETTINGS)
def test_query_parameters_per_mode(fmt: str, mode: str):
    push = builder(fmt, mode).text("hi", openid="o_sender")
    q = push.query
    assert q["signature"] == signature(TOKEN, q["timestamp"], q["nonce"])
    assert q["timestamp"] == "1700000000" and q["nonce"].isdigit()
    if mode == "plaintext":
        assert list(q) == ["signature", "timestamp", "nonce"]
        return
    assert list(q) == ENCRYPTED_QUERY
    assert q["openid"] == "o_sender" and q["encrypt_type"] == "aes"
    encrypt = parse_body(push.body, fmt)["Encrypt"]
    assert q["msg_signature"] == signature(TOKEN, q["timestamp"], q["nonce"], encrypt)


@pytest.mark.parametrize("fmt, mode", SETTINGS)
def test_bodies_per_mode(fmt: str, mode: str):
    push = builder(fmt, mode).text("hi")
    plain = render(push.fields, fmt)
    assert push.content_type == {"xml": "text/xml", "json": "application/json"}[fmt]
    if mode == "plaintext":
        assert push.body == plain.encode()
        return
    envelope = parse_body(push.body, fmt)
    encrypt = envelope.pop("Encrypt")
    assert Cipher(KEY, APPID).decrypt(encrypt) == plain.encode()
    if mode == "safe":
        assert envelope == {"ToUserName": "gh_0123456789ab"}
    else:                                   # compatible: the plaintext fields plus Encrypt
        assert envelope == parse_body(plain.encode(), fmt)
        assert push.body.startswith(plain[:-len("</xml>")].encode() if fmt == "xml"
                                    else plain[:-1].encode())


def test_compatible_xml_has_the_official_sample_layout():
    body = builder("xml", "compatible").text("abcdteT", msg_id=6054768590064713728).body.decode()
    assert body.startswith("<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
                           "<FromUserName><![CDATA[")
    assert "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>" \
           "<Content><![CDATA[abcdteT]]></Content><MsgId>6054768590064713728</MsgId>" \
           "<Encrypt><![CDATA[" in body
    assert body.endswith("]]></Encrypt></xml>")


def test_json_keeps_64_bit_msg_ids_exact():
    push = builder("json", "safe").text("hi", msg_id=6054768590064713728)
    assert opened(config("json"), push).message.msg_id == 6054768590064713728


def test_same_seed_and_clock_give_identical_pushes():
    a, b = builder(seed=5).text("hi"), builder(seed=5).text("hi")
    assert a == b
    assert builder(seed=6).text("hi").query["nonce"] != a.query["nonce"]


def test_build_accepts_message_objects_and_raw_fields():
    message = TextMessage(to_user="gh_real", from_user="o1", create_time=1_700_000_000,
                          content="hi", msg_id=42, extra=(("Extra", "x"),))
    assert opened(config(), builder().build(message)).message == message
    raw = {"ToUserName": "gh_real", "FromUserName": "o1", "CreateTime": 1_700_000_000,
           "MsgType": "event", "Event": "wxa_media_check", "trace_id": "t"}
    assert opened(config(), builder().build(raw)).message.get("trace_id") == "t"


@pytest.mark.parametrize("fmt, mode", SETTINGS)
def test_factory_messages_survive_the_trip(fmt: str, mode: str):
    messages = [factories.make_text("退货 ]]>"), factories.make_image(),
                factories.make_miniprogrampage(), factories.make_event("debug_demo"),
                factories.make_enter_session("faq"), factories.make_unknown("voice")]
    b = builder(fmt, mode, clock=lambda: factories.CREATE_TIME)
    for message in messages:
        assert opened(config(fmt, mode), b.build(message), now=factories.CREATE_TIME).message \
            == message


def test_url_verification_query():
    q = builder().url_verification("4375120948345356249")
    assert list(q) == ["signature", "echostr", "timestamp", "nonce"]
    assert verify_url(config(), q, now=1_700_000_000, tolerance=300) == "4375120948345356249"
    assert builder().url_verification()["echostr"].isdigit()


def test_wrong_token_or_tampering_is_refused():
    other = PushBuilder(appid=APPID, token="not-the-token", encoding_aes_key=KEY,
                        clock=FakeClock())
    with pytest.raises(BadSignature):
        opened(config(), other.text("hi"))
    push = builder().text("hi")
    tampered = BuiltPush({**push.query, "msg_signature": "0" * 40}, push.body,
                         push.content_type, push.fields)
    with pytest.raises(BadSignature):
        opened(config(), tampered)


def test_constructor_checks_its_settings():
    with pytest.raises(ValueError):
        PushBuilder(appid=APPID, token=TOKEN, mode="safe")
    with pytest.raises(ValueError):
        PushBuilder(appid=APPID, token=TOKEN, format="yaml", mode="plaintext")
    with pytest.raises(ValueError):
        PushBuilder(appid=APPID, token=TOKEN, mode="loud", encoding_aes_key=KEY)


def test_url_appends_the_query():
    push = builder().text("hi")
    assert push.url("http://h/wechat/wx1").startswith("http://h/wechat/wx1?signature=")
    assert push.url("http://h/w?a=1").startswith("http://h/w?a=1&signature=")


# --- open_reply ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, mode", SETTINGS)
def test_open_reply_reads_sealed_answers(fmt: str, mode: str):
    b = builder(fmt, mode)
    push = b.text("hi")
    pushed = opened(config(fmt, mode), push)
    fields = transfer_fields(pushed.message, now=1_700_000_001)
    body = seal(config(fmt, mode), pushed, fields, now=1_700_000_001, random16=b"r" * 16)
    assert {k: str(v) for k, v in b.open_reply(body.encode(), push).items()} == \
        {k: str(v) for k, v in fields.items()}
    assert b.open_reply(b"success") == b.open_reply(b"") == {}


def test_open_reply_refuses_what_wechat_would_refuse():
    b = builder("json", "safe")
    push = b.text("hi")
    pushed = opened(config("json"), push)
    fields = transfer_fields(pushed.message, now=1)
    body = seal(config("json"), pushed, fields, now=1, random16=b"r" * 16)
    with pytest.raises(BadSignature):
        b.open_reply(body.replace('"MsgSignature":"', '"MsgSignature":"0').encode())
    with pytest.raises(BadSignature, match="nonce"):
        b.open_reply(body.encode(), b.text("another"))
    with pytest.raises(MalformedRequest):
        b.open_reply(render(fields, "json").encode())
    assert builder("json", "compatible").open_reply(render(fields, "json").encode()) == fields


# --- wxpush push -----------------------------------------------------------------------------

class Hook:
    """A minimal webhook: opens each push with webhook.push.receive and answers as told."""

    def __init__(self, app: AppConfig, *, status: int = 200, transfer: bool = False) -> None:
        self.app, self.status, self.transfer = app, status, transfer
        self.seen: list[tuple[dict[str, str], bytes, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        query = dict(parse_qsl(environ["QUERY_STRING"]))
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.seen.append((query, body, environ.get("CONTENT_TYPE", "")))
        try:
            push = open_push(self.app, keyring_for(self.app), query, body, now=time.time(),
                             tolerance=300)
        except RequestRejected as exc:
            start_response(f"{exc.status} Rejected", [("Content-Type", "text/plain")])
            return [exc.reason.encode()]
        answer = "success"
        if self.transfer:
            now = int(time.time())
            answer = seal(self.app, push, transfer_fields(push.message, now=now), now=now,
                          random16=b"x" * 16)
        start_response(f"{self.status} Answer", [("Content-Type", "text/plain")])
        return [answer.encode()]


@pytest.fixture
def hook_server() -> Iterator[Callable[[Hook], RunningServer]]:
    servers: list[RunningServer] = []

    def start(hook: Hook) -> RunningServer:
        servers.append(serve(hook))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def run_push(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="wxpush")
    push_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["push", *argv])
    return args.handler(args)


def test_push_cli_retries_repeat_the_same_delivery(hook_server, capsys):
    hook = Hook(config("xml", "safe"))
    server = hook_server(hook)
    code = run_push(f"{server.url}/wechat/{APPID}", "--appid", APPID, "--token", TOKEN,
                    "--aes-key", KEY, "--text", "退货", "--retries", "2")
    assert code == 0
    assert len(hook.seen) == 3 and hook.seen[0] == hook.seen[1] == hook.seen[2]
    assert hook.seen[0][0]["encrypt_type"] == "aes" and hook.seen[0][2] == "text/xml"
    out = capsys.readouterr().out.splitlines()
    assert out == [*(f"delivery {n}: HTTP 200 success" for n in (1, 2, 3)),
                   "replies   not followed: give --config (or --emulator) to see them"]


def test_push_cli_reads_the_config_and_shows_decrypted_replies(hook_server, capsys, tmp_path):
    app = config("json", "compatible")
    server = hook_server(Hook(app, transfer=True))
    path = tmp_path / "wxpush.toml"
    path.write_text(f'[[apps]]\nappid = "{APPID}"\ntoken = "{TOKEN}"\n'
                    f'encoding_aes_key = "{KEY}"\nformat = "json"\nmode = "compatible"\n')
    code = run_push(f"{server.url}/wechat/{APPID}", "--config", str(path),
                    "--event", "user_enter_tempsession", "--session-from", "faq")
    out = capsys.readouterr().out
    assert code == 0 and "delivery 1: HTTP 200 {" in out
    assert "decrypted reply:" in out and "transfer_customer_service" in out


def test_push_cli_fails_on_non_2xx_and_bad_settings(hook_server, capsys, tmp_path):
    server = hook_server(Hook(config("xml", "plaintext")))
    url = f"{server.url}/wechat/{APPID}"
    assert run_push(url, "--appid", APPID, "--token", "wrong", "--text", "hi") == 1
    assert "delivery 1: HTTP 403 bad signature" in capsys.readouterr().out
    assert run_push(url, "--appid", APPID, "--token", TOKEN, "--image", "MEDIA") == 0
    with pytest.raises(ConfigError):
        run_push(url, "--appid", APPID, "--text", "hi")
    with pytest.raises(ConfigError):
        run_push(url, "--appid", APPID, "--token", TOKEN, "--mode", "safe", "--text", "hi")
    path = tmp_path / "wxpush.toml"
    path.write_text('[[apps]]\nappid = "wxother"\ntoken = "t"\nmode = "plaintext"\n'
                    '[[apps]]\nappid = "wxthird"\ntoken = "t"\nmode = "plaintext"\n')
    with pytest.raises(RequestRejected):
        run_push(url, "--config", str(path), "--text", "hi")


def test_push_cli_reports_a_dead_server(capsys):
    server = serve(Hook(config()))
    server.stop()
    assert run_push(server.url, "--appid", APPID, "--token", TOKEN, "--text", "hi") == 1
    assert "delivery 1: connection failed" in capsys.readouterr().out


def test_push_cli_tells_the_emulator(hook_server, capsys):
    emulator = Emulator()
    emulator.register_app(APPID, SECRET)
    server = hook_server(Hook(config("xml", "plaintext")))
    with serve(emulator.app) as emu_server:
        assert run_push(server.url, "--appid", APPID, "--token", TOKEN, "--openid", "o_cli",
                        "--text", "hi", "--emulator", emu_server.url, "--wait", "0") == 0
        token = requests.get(f"{emu_server.url}/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        ).json()["access_token"]
        answer = requests.post(f"{emu_server.url}/cgi-bin/message/custom/send",
                               params={"access_token": token},
                               json={"touser": "o_cli", "msgtype": "text",
                                     "text": {"content": "reply"}}).json()
    assert answer["errcode"] == 0
    assert run_push(server.url, "--appid", "wxunknown", "--token", TOKEN, "--text", "hi",
                    "--emulator", emu_server.url) == 1     # the emulator is gone by now
    assert "could not notify the emulator" in capsys.readouterr().err
