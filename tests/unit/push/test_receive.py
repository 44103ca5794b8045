"""receive.py: the six settings, official vectors end to end, every refusal, sealed replies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, strategies as st
from vectors import V1_ENCRYPT, V3_ENCRYPT

from webhook.config.settings import AppConfig
from webhook.errors import (BadSignature, DecryptError, MalformedRequest, RequestRejected,
                            StaleTimestamp)
from webhook.push.crypto import NOT_OPEN, Cipher, KeyRing
from webhook.push.messages import Event, TextMessage
from webhook.push.parsing import parse_body, render, transfer_fields
from webhook.push.receive import Push, keyring_for, open_push, seal, sealed_body, verify_url
from webhook.push.signature import signature

APPID = "wx0123456789abcdef"
TOKEN = "t0ken"
KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
OLD_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
NOW = 1714112445
TEXT = {"ToUserName": "gh_97417a04a28d", "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
        "CreateTime": NOW, "MsgType": "text", "Content": "你好 <&> ]]>", "MsgId": 6054768590064713728}
SETTINGS = [(fmt, mode) for fmt in ("xml", "json") for mode in ("plaintext", "compatible", "safe")]

# docs/protocol.md §2.1/§2.2/§2.6: the official safe-mode JSON example, verbatim
V1_APP = AppConfig(appid="wxba5fad812f8e6fb9", token="AAAAA", encoding_aes_key="A" * 43,
                   format="json", mode="safe")
V1_QUERY = {"signature": "6c5c811b55cc85e0e1b54100749188c20beb3f5d", "timestamp": "1714112445",
            "nonce": "415670741", "openid": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "encrypt_type": "aes",
            "msg_signature": "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"}

# the body as the official page prints it
V1_BODY = ('{\n    "ToUserName": "gh_97417a04a28d",\n    "Encrypt": "%s"\n}' % V1_ENCRYPT).encode()


def app(fmt: str = "xml", mode: str = "safe", **overrides: Any) -> AppConfig:
    return AppConfig(**{"appid": APPID, "token": TOKEN, "encoding_aes_key": KEY, "format": fmt,
                        "mode": mode, **overrides})


def build(fmt: str, mode: str, fields: dict[str, Any] = TEXT, *, key: str = KEY,
          appid: str = APPID, timestamp: str = str(NOW), nonce: str = "415670741",
          message: bytes | None = None) -> tuple[dict[str, str], bytes]:
    """Query and body exactly as WeChat sends them (docs/protocol.md §2.1, §2.2)."""
    message = render(fields, fmt).encode() if message is None else message
    query = {"signature": signature(TOKEN, timestamp, nonce), "timestamp": timestamp,
             "nonce": nonce}
    if mode == "plaintext":
        return query, message
    encrypt = Cipher(key, appid).encrypt(message, random16=b"0123456789abcdef")
    query |= {"openid": fields["FromUserName"], "encrypt_type": "aes",
              "msg_signature": signature(TOKEN, timestamp, nonce, encrypt)}
    envelope = ({"ToUserName": fields["ToUserName"], "Encrypt": encrypt} if mode == "safe"
                else {**fields, "Encrypt": encrypt})
    return query, render(envelope, fmt).encode()


def open_(config: AppConfig, query: dict[str, str], body: bytes, *, now: float = NOW,
          ring: KeyRing | None | str = "auto") -> Push:
    keys = keyring_for(config) if ring == "auto" else ring
    return open_push(config, keys, query, body, now=now, tolerance=300)  # type: ignore[arg-type]


# --- the six settings ----------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "mode"), SETTINGS)
def test_each_setting_opens_its_push(fmt: str, mode: str) -> None:
    config = app(fmt, mode)
    query, body = build(fmt, mode)
    push = open_(config, query, body)
    assert isinstance(push.message, TextMessage)
    assert push.message.content == TEXT["Content"]
    assert push.message.msg_id == 6054768590064713728
    assert push.plaintext == render(TEXT, fmt).encode()
    assert push.nonce == "415670741"
    if mode == "plaintext":
        assert push.cipher is None and push.plaintext == body
    else:
        assert push.cipher is not None and push.cipher.appid == APPID


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_xml_and_json_settings_give_equal_messages(fmt: str) -> None:
    assert open_(app(fmt), *build(fmt, "safe")).message == open_(app("xml", "plaintext"),
                                                                 *build("xml", "plaintext")).message


def test_official_v1_safe_json_push() -> None:
    push = open_(V1_APP, V1_QUERY, V1_BODY)
    assert len(push.plaintext) == 167
    assert type(push.message) is Event and push.message.event == "debug_demo"
    assert push.message.get("debug_str") == "hello world"
    assert push.message.create_time == 1714112445


def test_official_v3_compatible_xml_push() -> None:
    config = AppConfig(appid="wx2c2769f8efd9abc2", token="spamtest", encoding_aes_key=OLD_KEY,
                       format="xml", mode="compatible")
    query = {"signature": signature("spamtest", "1409735669", "1320562132"),
             "timestamp": "1409735669", "nonce": "1320562132", "encrypt_type": "aes",
             "msg_signature": "5d197aaffba7e9b25a30732f161a50dee96bd5fa"}
    # the plaintext copy is deliberately different: compatible mode reads only the ciphertext
    body = ("<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
            "<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>"
            "<CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            "<Content><![CDATA[forged copy]]></Content><MsgId>6054768590064713728</MsgId>"
            f"<Encrypt><![CDATA[{V3_ENCRYPT}]]></Encrypt></xml>").encode()
    push = open_(config, query, body, now=1409735669)
    assert push.message.content == "abcdteT"
    assert push.message.to_user == "gh_10f6c3c3ac5a"
    assert push.message.msg_id == 6054768590064713728


def test_plaintext_mode_decrypts_when_a_key_is_configured() -> None:
    query, body = build("xml", "compatible")
    push = open_(app("xml", "plaintext"), query, body)
    assert push.cipher.appid == APPID and push.message.content == TEXT["Content"]


def test_plaintext_mode_without_a_key_reads_the_plaintext_copy() -> None:
    query, body = build("json", "compatible")
    push = open_(app("json", "plaintext", encoding_aes_key=None), query, body)
    assert push.cipher is None and push.message.content == TEXT["Content"]


def test_previous_key_opens_and_is_reported() -> None:
    config = app("json", previous_encoding_aes_key=OLD_KEY)
    ring = keyring_for(config)
    assert ring is not None
    push = open_(config, *build("json", "safe", key=OLD_KEY), ring=ring)
    assert push.cipher is ring.previous
    push = open_(config, *build("json", "safe", key=KEY), ring=ring)
    assert push.cipher is ring.current


def test_keyring_for() -> None:
    assert keyring_for(app("xml", "plaintext", encoding_aes_key=None)) is None
    ring = keyring_for(app())
    assert ring.current.appid == APPID and ring.previous is None


# --- refusals ------------------------------------------------------------------------------

def _without(query: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in query.items() if k != name}


def _signed(query: dict[str, str], encrypt: str) -> dict[str, str]:
    return {**query, "msg_signature": signature(TOKEN, query["timestamp"], query["nonce"], encrypt)}


def refusals() -> list[tuple[str, str, str, Any, type[RequestRejected]]]:
    """(id, fmt, mode, (query, body) or a callable making them, expected error)."""
    cases: list[Any] = []
    for fmt in ("xml", "json"):
        q, b = build(fmt, "safe")
        cases += [
            ("no_timestamp", fmt, "safe", (_without(q, "timestamp"), b), MalformedRequest),
            ("no_nonce", fmt, "safe", (_without(q, "nonce"), b), MalformedRequest),
            ("empty_nonce", fmt, "safe", ({**q, "nonce": ""}, b), MalformedRequest),
            ("timestamp_not_decimal", fmt, "safe", ({**q, "timestamp": "17e8"}, b),
             MalformedRequest),
            ("stale", fmt, "safe", build(fmt, "safe", timestamp=str(NOW - 301)), StaleTimestamp),
            ("future", fmt, "safe", build(fmt, "safe", timestamp=str(NOW + 301)), StaleTimestamp),
            ("not_encrypted", fmt, "safe", (_without(q, "encrypt_type"), b), MalformedRequest),
            ("raw_in_safe", fmt, "compatible", ({**q, "encrypt_type": "raw"}, b),
             MalformedRequest),
            ("unknown_encrypt_type", fmt, "safe", ({**q, "encrypt_type": "des"}, b),
             MalformedRequest),
            ("body_garbage", fmt, "safe", (q, b"\x00garbage"), MalformedRequest),
            ("body_not_utf8", fmt, "safe", (q, b"\xff" + b), MalformedRequest),
            ("no_msg_signature", fmt, "safe", (_without(q, "msg_signature"), b),
             MalformedRequest),
            ("no_encrypt", fmt, "safe", (q, render({"ToUserName": "gh_x"}, fmt).encode()),
             MalformedRequest),
            ("bad_msg_signature", fmt, "safe", ({**q, "msg_signature": "f" * 40}, b),
             BadSignature),
            ("url_signature_as_msg_signature", fmt, "safe",
             ({**q, "msg_signature": q["signature"]}, b), BadSignature),
            ("encrypt_not_base64", fmt, "safe",
             (_signed(q, "@@@@"), render({"Encrypt": "@@@@"}, fmt).encode()), MalformedRequest),
            ("wrong_key", fmt, "safe", build(fmt, "safe", key=OLD_KEY), DecryptError),
            ("other_appid", fmt, "safe", build(fmt, "safe", appid="wx_other"), DecryptError),
            # A decrypted message that does not read answers as one that does not decrypt
            ("message_garbage", fmt, "safe", build(fmt, "safe", message=b"<<<>>>"),
             DecryptError),
            ("message_missing_sender", fmt, "safe",
             build(fmt, "safe", message=render({k: v for k, v in TEXT.items()
                                                if k != "FromUserName"}, fmt).encode()),
             DecryptError),
            ("plaintext_garbage", fmt, "plaintext", (build(fmt, "plaintext")[0], b"<{"),
             MalformedRequest),
            ("plaintext_no_signature", fmt, "plaintext",
             (_without(build(fmt, "plaintext")[0], "signature"), build(fmt, "plaintext")[1]),
             MalformedRequest),
            ("plaintext_bad_signature", fmt, "plaintext",
             ({**build(fmt, "plaintext")[0], "signature": "0" * 40}, build(fmt, "plaintext")[1]),
             BadSignature),
        ]
    q, b = build("json", "safe")
    cases += [
        ("encrypt_not_a_string", "json", "safe", (q, b'{"Encrypt": 12}'), MalformedRequest),
        ("xml_doctype_message", "xml", "plaintext",
         (build("xml", "plaintext")[0], b"<!DOCTYPE x [<!ENTITY a 'b'>]><xml><a>&a;</a></xml>"),
         MalformedRequest),
        ("json_array", "json", "plaintext", (build("json", "plaintext")[0], b"[]"),
         MalformedRequest),
    ]
    return cases


@pytest.mark.parametrize(("fmt", "mode", "request_", "error"),
                         [case[1:] for case in refusals()], ids=[case[0] for case in refusals()])
def test_refusals(fmt: str, mode: str, request_: tuple[dict[str, str], bytes],
                  error: type[RequestRejected]) -> None:
    with pytest.raises(error) as info:
        open_(app(fmt, mode), *request_)
    assert type(info.value) is error
    assert info.value.status == {MalformedRequest: 400}.get(error, 403)


def test_an_authentic_push_whose_message_does_not_read_is_refused_as_not_opening() -> None:
    with pytest.raises(DecryptError) as info:
        open_(app(), *build("xml", "safe", message=b"<<<>>>"))
    assert info.value.reason == NOT_OPEN   # the answer; the detail is for the log alone
    assert info.value.detail == "message unreadable: body is not well-formed XML"


def test_encrypted_mode_without_a_keyring_refuses() -> None:
    with pytest.raises(DecryptError):
        open_(app(), *build("xml", "safe"), ring=None)


def test_checks_run_in_the_documented_order() -> None:
    query, body = build("xml", "safe", timestamp=str(NOW - 1000))
    with pytest.raises(MalformedRequest):  # parameters before the window
        open_(app(), _without(query, "nonce"), body)
    with pytest.raises(StaleTimestamp):  # window before the signature
        open_(app(), {**query, "msg_signature": "0" * 40}, body)
    query, body = build("xml", "plaintext")
    with pytest.raises(BadSignature):  # signature before the body is even parsed
        open_(app("xml", "plaintext"), {**query, "signature": "0" * 40}, b"<<garbage")


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_an_encrypted_push_is_authenticated_by_msg_signature_alone(fmt: str) -> None:
    """The docs: with encrypt_type=aes, check msg_signature, "不要使用signature验证"."""
    query, body = build(fmt, "safe")
    for url_signature in ({**query, "signature": "0" * 40}, _without(query, "signature")):
        assert open_(app(fmt), url_signature, body).message.content == TEXT["Content"]


def test_a_keyless_app_checks_the_url_signature_of_an_encrypted_push() -> None:
    """Plaintext mode without an EncodingAESKey reads the plaintext copy: only the URL
    signature can authenticate it."""
    config = app("json", "plaintext", encoding_aes_key=None)
    query, body = build("json", "compatible")
    with pytest.raises(BadSignature):
        open_(config, {**query, "signature": "0" * 40}, body)
    with pytest.raises(MalformedRequest):
        open_(config, _without(query, "signature"), body)


@given(which=st.sampled_from(["timestamp", "nonce", "msg_signature", "Encrypt"]),
       index=st.integers(0, 500), char=st.sampled_from("0123456789abcdefXYZ+/="))
def test_any_one_character_change_is_refused(which: str, index: int, char: str) -> None:
    query, body = build("json", "safe")
    if which == "Encrypt":
        encrypt = json.loads(body)["Encrypt"]
        index %= len(encrypt)
        if encrypt[index] == char:
            return
        body = json.dumps({"Encrypt": encrypt[:index] + char + encrypt[index + 1:]}).encode()
    else:
        value = query[which]
        index %= len(value)
        if value[index] == char:
            return
        query = {**query, which: value[:index] + char + value[index + 1:]}
    with pytest.raises(RequestRejected):
        open_push(app("json"), keyring_for(app("json")), query, body, now=NOW, tolerance=0)


# --- URL verification ----------------------------------------------------------------------

def test_verify_url_official_example() -> None:
    query = {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441696",
             "echostr": "4375120948345356249", "timestamp": "1714036504", "nonce": "1514711492"}
    for mode in ("plaintext", "compatible", "safe"):
        config = app(token="AAAAA", mode=mode)
        assert verify_url(config, query, now=1714036504, tolerance=300) == "4375120948345356249"
    with pytest.raises(BadSignature):
        verify_url(app(), query, now=1714036504, tolerance=300)
    with pytest.raises(MalformedRequest):
        verify_url(app(token="AAAAA"), _without(query, "echostr"), now=1714036504, tolerance=300)
    with pytest.raises(StaleTimestamp):
        verify_url(app(token="AAAAA"), query, now=1714036504 + 301, tolerance=300)


# --- sealed replies ------------------------------------------------------------------------

def test_seal_reproduces_the_official_json_reply() -> None:
    push = open_(V1_APP, V1_QUERY, V1_BODY)
    body = seal(V1_APP, push, {"demo_resp": "good luck"}, now=1713424427,
                random16=b"707722b803182950")
    assert json.loads(body) == {
        "Encrypt": "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1"
                   "L32tmxSQ==",
        "MsgSignature": "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1",
        "TimeStamp": 1713424427,
        "Nonce": "415670741"}
    assert body == json.dumps(json.loads(body), separators=(",", ":"))


def test_sealed_body_reproduces_the_official_xml_reply() -> None:
    body = sealed_body(Cipher("A" * 43, "wx134c8103faa5a59e"), "AAAAA",
                       b"<xml><demo_resp>[CDATA[good luck]]</demo_resp></xml>",
                       nonce="415670741", now=1713424427, random16=b"999951349e8ee746", fmt="xml")
    assert body == (
        "<xml>\n"
        "<Encrypt><![CDATA[hE8R6mGXHkJJjU72KxzKUd1GEkKJaEZq7vRL8XgK3o+00k8JGq6+pZJUIlTSyhsX+bxIBQ72"
        "g3GyvDdIZcr6+3HAZbSvPT9t/o11MI7d6WELwqrGd7jMnV0zv3Zc9Nq7]]></Encrypt>\n"
        "<MsgSignature><![CDATA[03e0812039325c2712ef5f0f980fd14c70d6e307]]></MsgSignature>\n"
        "<TimeStamp>1713424427</TimeStamp>\n"
        "<Nonce><![CDATA[415670741]]></Nonce>\n"
        "</xml>")


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_sealed_transfer_opens_with_the_key_that_opened_the_push(fmt: str) -> None:
    config = app(fmt, previous_encoding_aes_key=OLD_KEY)
    push = open_(config, *build(fmt, "safe", key=OLD_KEY))
    fields = transfer_fields(push.message, now=NOW + 1)
    body = seal(config, push, fields, now=NOW + 1, random16=bytes(16))
    envelope = parse_body(body.encode(), fmt)
    assert int(envelope["TimeStamp"]) == NOW + 1 and envelope["Nonce"] == "415670741"
    assert envelope["MsgSignature"] == signature(TOKEN, str(NOW + 1), "415670741",
                                                 envelope["Encrypt"])
    reply = Cipher(OLD_KEY, APPID).decrypt(envelope["Encrypt"])
    assert reply == render(fields, fmt).encode()
    with pytest.raises(DecryptError):
        Cipher(KEY, APPID).decrypt(envelope["Encrypt"])


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_seal_of_a_plaintext_push_is_plain(fmt: str) -> None:
    config = app(fmt, "plaintext", encoding_aes_key=None)
    push = open_(config, *build(fmt, "plaintext"))
    fields = transfer_fields(push.message, now=NOW)
    assert seal(config, push, fields, now=NOW, random16=bytes(16)) == render(fields, fmt)


@given(setting=st.sampled_from(SETTINGS), body=st.binary(max_size=300) | st.sampled_from([
           b"<xml><Encrypt>QUFB</Encrypt></xml>", b'{"Encrypt":"QUFBQUFBQUFBQUFBQUFBQQ=="}',
           b'{"Encrypt":["x"]}', b"<xml><Encrypt><a>1</a></Encrypt></xml>", b"<xml/>"]),
       encrypt_type=st.sampled_from([None, "aes", "raw", ""]))
def test_any_body_is_opened_or_refused_never_crashes(setting: tuple[str, str], body: bytes,
                                                      encrypt_type: str | None) -> None:
    fmt, mode = setting
    query = build(fmt, "plaintext")[0]
    if encrypt_type is not None:
        query["encrypt_type"] = encrypt_type
    try:
        fields = parse_body(body, fmt)
        encrypt = fields.get("Encrypt")
        if isinstance(encrypt, str):
            query = _signed(query, encrypt)
    except MalformedRequest:
        pass
    try:
        push = open_(app(fmt, mode), query, body)
    except RequestRejected as refused:
        assert 400 <= refused.status < 500
    else:
        assert push.message.openid and push.message.msg_type
