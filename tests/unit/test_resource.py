"""The push edge (webhook/resource.py) through falcon.testing: whatever a client sends, the
answer is a 2xx or a 4xx with a short reason, and a refused push is not recorded."""

from __future__ import annotations

import json
import random
from urllib.parse import quote_from_bytes

import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from webhook.crypto import Cipher
from webhook.parsing import read_message
from webhook.signature import signature
from webhook.testing import Emulator, PushBuilder, serve
from webhook.testing.factories import make_text
from webhook.wellformed import is_text

from test_app import APPID, KEY, SECRET, TOKEN, build

# Any character, half surrogate pairs too (hypothesis leaves those out by default).
CHARS = st.characters() | st.characters(categories=["Cs"])
TEXTS = st.text(CHARS, max_size=20)
FIELDS = ("ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "Event",
          "Encrypt")
NOT_TEXT = "body is not valid Unicode (a lone surrogate)"
EXAMPLES = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def emulator():
    emu = Emulator()
    emu.register_app(APPID, SECRET)
    server = serve(emu.app)
    yield emu, server.url
    server.stop()


@pytest.fixture(scope="module", params=["xml", "json"])
def edge(request, tmp_path_factory, emulator):
    """One app per format (safe mode), kept for every example of a module."""
    app, client, builder = build(tmp_path_factory.mktemp(request.param), emulator,
                                 fmt=request.param)
    yield app, client, builder
    app.store.close()


def sign(query: dict[str, str], encrypt: str) -> dict[str, str]:
    return {**query, "msg_signature": signature(TOKEN, query["timestamp"], query["nonce"],
                                                encrypt)}


def encrypted(builder: PushBuilder, plaintext: bytes) -> tuple[dict[str, str], bytes]:
    """A push whose decrypted payload is ``plaintext``, signed and encrypted as WeChat would."""
    query = builder.build(make_text("hi")).query
    encrypt = Cipher(KEY, APPID).encrypt(plaintext, random16=random.randbytes(16))
    body = (json.dumps({"ToUserName": "gh_1", "Encrypt": encrypt}) if builder.format == "json"
            else f"<xml><ToUserName>gh_1</ToUserName><Encrypt>{encrypt}</Encrypt></xml>")
    return sign(query, encrypt), body.encode()


def answered(result) -> None:
    assert result.status_code < 500, result.text
    if result.status_code >= 400:
        assert 0 < len(result.text) < 80 and "Traceback" not in result.text


# --- half a surrogate pair ------------------------------------------------------------------

def test_a_json_envelope_holding_half_a_surrogate_pair_is_refused(tmp_path, emulator):
    """No signature needed: this used to crash the signature check (500)."""
    app, client, builder = build(tmp_path, emulator, fmt="json")
    query = builder.build(make_text("hi")).query
    result = client.simulate_post(f"/wechat/{APPID}", params=query,
                                  body=b'{"Encrypt":"\\ud800"}')
    assert (result.status_code, result.text) == (400, NOT_TEXT)


@pytest.mark.parametrize("escape", ["\\ud800", "\\uDFFF", "a\\udbff", "\\udc00\\ud800"])
def test_a_signed_push_whose_sender_is_half_a_surrogate_pair_is_refused_unrecorded(
        tmp_path, emulator, escape):
    """It used to be answered 200, then failed in the store on every claim, for ever."""
    app, client, builder = build(tmp_path, emulator, fmt="json")
    payload = ('{"ToUserName":"gh_1","FromUserName":"%s","CreateTime":1700000000,'
               '"MsgType":"text","Content":"hi","MsgId":5}' % escape).encode()
    query, body = encrypted(builder, payload)
    result = client.simulate_post(f"/wechat/{APPID}", params=query, body=body)
    assert (result.status_code, result.text) == (400, NOT_TEXT)
    assert app.store.inbox_waiting() == 0


def test_a_correct_surrogate_pair_escape_is_one_character(tmp_path, emulator):
    app, client, builder = build(tmp_path, emulator, fmt="json")
    payload = ('{"ToUserName":"gh_1","FromUserName":"o-\\ud83d\\ude00","CreateTime":1700000000,'
               '"MsgType":"text","Content":"\\ud83d\\ude00","MsgId":6}').encode()
    query, body = encrypted(builder, payload)
    result = client.simulate_post(f"/wechat/{APPID}", params=query, body=body)
    assert (result.status_code, result.text) == (200, "success")
    assert read_message(payload, "json").from_user == "o-\U0001f600"
    assert app.store.inbox_waiting() == 1


@pytest.mark.parametrize("raw, decoded", [("%ED%A0%80", "\ufffd" * 3), ("%FF", "\ufffd"),
                                          ("%C3%28", "\ufffd("), ("%00%0A%1B", "\x00\n\x1b")])
def test_falcon_gives_query_values_as_valid_text(edge, raw, decoded):
    """Invalid UTF-8 in a query value becomes U+FFFD: never a surrogate, whatever is sent.
    Such a value fails the signature like any other altered one."""
    _, client, builder = edge
    assert falcon.testing.create_req(query_string=f"nonce={raw}").params["nonce"] == decoded
    push = builder.build(make_text("hi"))
    query = "&".join(f"{k}={raw if k == 'nonce' else v}" for k, v in push.query.items())
    result = client.simulate_post(f"/wechat/{APPID}", query_string=query, body=push.body)
    assert (result.status_code, result.text) == (403, "bad signature")


# --- properties: never a 5xx ------------------------------------------------------------------

@EXAMPLES
@given(fields=st.dictionaries(st.sampled_from(FIELDS) | TEXTS, TEXTS | st.integers(), max_size=6),
       signed=st.booleans(), how=st.sampled_from(["refs", "raw"]))
def test_any_envelope_is_answered_never_a_5xx(edge, fields, signed, how):
    """The outer body: any JSON string values (lone surrogates as \\u escapes), any XML text
    (as character references, which may name a surrogate, or raw UTF-8 with surrogatepass)."""
    _, client, builder = edge
    query = builder.build(make_text("hi")).query
    encrypt = fields.get("Encrypt")
    if signed and isinstance(encrypt, str) and is_text(encrypt):
        query = sign(query, encrypt)
    if builder.format == "json":
        body = json.dumps(fields).encode()
    else:
        body = xml_body(fields, how)
    answered(client.simulate_post(f"/wechat/{APPID}", params=query, body=body))


def xml_body(fields: dict, how: str) -> bytes:
    def text(value) -> str:
        if how == "refs":
            return "".join(f"&#x{ord(ch):X};" for ch in str(value))
        return str(value)

    names = [name if name.isidentifier() and name.isascii() else "x" for name in fields]
    inner = "".join(f"<{n}>{text(v)}</{n}>" for n, v in zip(names, fields.values()))
    return f"<xml>{inner}</xml>".encode("utf-8", "surrogatepass")


@EXAMPLES
@given(values=st.fixed_dictionaries({}, optional={name: TEXTS | st.integers() for name in FIELDS}),
       how=st.sampled_from(["json", "refs", "raw"]))
def test_any_decrypted_push_is_refused_or_readable(edge, values, how):
    """Signed and encrypted, so every check before the payload passes: a 200 means the push
    is recorded, and its payload must then read as a message of valid text."""
    app, client, builder = edge
    fields = {"ToUserName": "gh_1", "FromUserName": "o-1", "CreateTime": 1700000000,
              "MsgType": "text", **values}
    fields.pop("Encrypt", None)
    if builder.format == "json":
        payload = json.dumps(fields).encode()
    else:
        payload = xml_body(fields, "raw" if how == "json" else how)
    query, body = encrypted(builder, payload)
    result = client.simulate_post(f"/wechat/{APPID}", params=query, body=body)
    answered(result)
    if result.status_code == 200:
        message = read_message(payload, builder.format)
        for value in (message.from_user, message.to_user, message.msg_type,
                      message.dedupe_key, *(v for pair in message.extra for v in pair)):
            value.encode("utf-8")


@EXAMPLES
@given(params=st.dictionaries(st.sampled_from(["signature", "timestamp", "nonce", "openid",
                                               "encrypt_type", "msg_signature", "echostr"])
                              | st.text(max_size=5), st.binary(max_size=12), max_size=7),
       appid=st.binary(max_size=12) | st.just(APPID.encode()), method=st.sampled_from(["GET", "POST"]))
def test_any_query_and_path_are_answered_never_a_5xx(edge, params, appid, method):
    _, client, builder = edge
    query = "&".join(f"{quote_from_bytes(k.encode('utf-8', 'surrogatepass'))}="
                     f"{quote_from_bytes(v)}" for k, v in params.items())
    body = builder.build(make_text("hi")).body if method == "POST" else b""
    result = client.simulate_request(method, f"/wechat/{quote_from_bytes(appid, safe='')}",
                                     query_string=query, body=body)
    assert result.status_code < 500, result.text
