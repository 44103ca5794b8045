"""The push edge (webhook/server/resources.py) through falcon.testing: whatever a client sends, the
answer is a 2xx or a 4xx with a short reason, and a refused push is not recorded."""

from __future__ import annotations

import base64
import json
import logging
import random
from urllib.parse import quote, quote_from_bytes, urlencode

import falcon
import falcon.testing
import pytest
from Crypto.Cipher import AES
from hypothesis import HealthCheck, given, settings, strategies as st
from test_app import APPID, KEY, TOKEN, build, emulator  # noqa: F401 - a fixture

from webhook.errors import DecryptError, RequestRejected, StoreError
from webhook.logsafe import Repeats
from webhook.push.crypto import NOT_OPEN, Cipher, aes_key
from webhook.push.parsing import parse_body, read_message, render
from webhook.push.signature import signature
from webhook.server.resources import add_error_handlers
from webhook.testing import PushBuilder
from webhook.testing.clock import FakeClock
from webhook.testing.factories import make_text
from webhook.wellformed import is_text

# Any character, half surrogate pairs too (hypothesis leaves those out by default).
CHARS = st.characters() | st.characters(categories=["Cs"])
TEXTS = st.text(CHARS, max_size=20)
FIELDS = ("ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "Event",
          "Encrypt")
NOT_TEXT = "body is not valid Unicode (a lone surrogate)"
EXAMPLES = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


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
@pytest.mark.parametrize("mode, answer", [("plaintext", (400, NOT_TEXT)),
                                          ("safe", (403, NOT_OPEN))])
def test_a_signed_push_whose_sender_is_half_a_surrogate_pair_is_refused_unrecorded(
        tmp_path, emulator, escape, mode, answer):
    """It used to be answered 200, then failed in the store on every claim, for ever. (A
    decrypted message that does not read gets the answer of one that does not decrypt.)"""
    app, client, builder = build(tmp_path, emulator, fmt="json", mode=mode)
    payload = ('{"ToUserName":"gh_1","FromUserName":"%s","CreateTime":1700000000,'
               '"MsgType":"text","Content":"hi","MsgId":5}' % escape).encode()
    query, body = (encrypted(builder, payload) if mode == "safe"
                   else (builder.build(make_text("hi")).query, payload))
    result = client.simulate_post(f"/wechat/{APPID}", params=query, body=body)
    assert (result.status_code, result.text) == answer
    assert app.store.inbox_stats()["pending"] == 0


def test_a_correct_surrogate_pair_escape_is_one_character(tmp_path, emulator):
    app, client, builder = build(tmp_path, emulator, fmt="json")
    payload = ('{"ToUserName":"gh_1","FromUserName":"o-\\ud83d\\ude00","CreateTime":1700000000,'
               '"MsgType":"text","Content":"\\ud83d\\ude00","MsgId":6}').encode()
    query, body = encrypted(builder, payload)
    result = client.simulate_post(f"/wechat/{APPID}", params=query, body=body)
    assert (result.status_code, result.text) == (200, "success")
    assert read_message(payload, "json").from_user == "o-\U0001f600"
    assert app.store.inbox_stats()["pending"] == 1


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
       appid=st.binary(max_size=12) | st.just(APPID.encode()),
       method=st.sampled_from(["GET", "POST"]))
def test_any_query_and_path_are_answered_never_a_5xx(edge, params, appid, method):
    _, client, builder = edge
    query = "&".join(f"{quote_from_bytes(k.encode('utf-8', 'surrogatepass'))}="
                     f"{quote_from_bytes(v)}" for k, v in params.items())
    body = builder.build(make_text("hi")).body if method == "POST" else b""
    result = client.simulate_request(method, f"/wechat/{quote_from_bytes(appid, safe='')}",
                                     query_string=query, body=body)
    assert result.status_code < 500, result.text
    assert result.status_code == 200 or 0 < len(result.text) < 80


def test_a_repeated_parameter_is_named_short(edge):
    _, client, builder = edge
    push = builder.build(make_text("hi"))
    key = "k\x1b" + "x" * 1000
    query = urlencode(push.query) + f"&{quote(key)}=1&{quote(key)}=2"
    result = client.simulate_post(f"/wechat/{APPID}", query_string=query, body=push.body)
    assert result.status_code == 400
    assert result.text == "query parameter k\\x1bxxxxxxxxxxxxxxxxxxxxxx...(+978) repeated"


# --- one answer for every push that does not open ---------------------------------------------

def envelope_encrypt(builder: PushBuilder, body: bytes) -> str:
    fields = json.loads(body) if builder.format == "json" else parse_body(body, "xml")
    return fields["Encrypt"]


def post_encrypt(client, builder: PushBuilder, query: dict[str, str], encrypt: str):
    body = (json.dumps({"ToUserName": "gh_1", "Encrypt": encrypt}) if builder.format == "json"
            else f"<xml><ToUserName>gh_1</ToUserName><Encrypt>{encrypt}</Encrypt></xml>")
    return client.simulate_post(f"/wechat/{APPID}", params=sign(query, encrypt),
                                body=body.encode())


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_every_tampered_ciphertext_gets_one_answer_or_opens(tmp_path, emulator, fmt):
    """Each byte flipped three ways, and the byte that sets the pad given all 256 values, the
    ciphertext signed again (as whoever holds the Token can): the push opens, or it gets the
    one answer, whichever check (padding, length, AppID, the message) failed."""
    _, client, builder = build(tmp_path, emulator, fmt=fmt)
    push = builder.build(make_text("营业时间?", msg_id=77))
    raw = base64.b64decode(envelope_encrypt(builder, push.body))
    changes = [(i, mask) for i in range(len(raw)) for mask in (0x01, 0x80, 0xFF)]
    pad_byte = len(raw) - 17   # the last block's byte 15 comes from it (CBC)
    changes += [(pad_byte, value ^ raw[pad_byte]) for value in range(256)]
    answers, opened = set(), 0
    for index, mask in changes:
        if not mask:
            continue
        tampered = bytearray(raw)
        tampered[index] ^= mask
        result = post_encrypt(client, builder, push.query, base64.b64encode(tampered).decode())
        if result.status_code == 200:
            opened += 1
            continue
        answers.add((result.status_code, result.headers["content-type"], result.text))
    assert answers == {(403, "text/plain; charset=utf-8", NOT_OPEN)}
    assert opened < len(changes) // 10     # mostly refused: the failures were exercised


def test_another_appid_and_bad_padding_take_the_same_path_to_the_answer(tmp_path, emulator):
    """At the HTTP edge both are the same exception with the same reason; only the detail,
    which goes to the log, differs."""
    app, client, builder = build(tmp_path, emulator)
    seen = []

    def record(req, resp, ex, params):
        seen.append((type(ex), ex.status, ex.reason, ex.detail))
        resp.status, resp.text = falcon.code_to_http_status(ex.status), ex.reason

    app.add_error_handler(RequestRejected, record)
    query = builder.build(make_text("hi")).query
    message = render({"ToUserName": "gh_1", "FromUserName": "o-1", "CreateTime": 1,
                      "MsgType": "text", "Content": "hi"}, "xml").encode()
    full = bytes(16) + len(message).to_bytes(4, "big") + message + APPID.encode()
    fill = -len(full) % 32 or 32
    key = aes_key(KEY)
    encrypts = [Cipher(KEY, "wx0000000000000000").encrypt(message, random16=bytes(16))] + [
        base64.b64encode(AES.new(key, AES.MODE_CBC, key[:16]).encrypt(full + pad)).decode()
        for pad in (bytes(fill), bytes([33]) * fill, bytes([fill + 1]) * fill)]
    answers = {(r.status_code, r.text) for r in (post_encrypt(client, builder, query, encrypt)
                                                 for encrypt in encrypts)}
    assert answers == {(403, NOT_OPEN)}
    assert [entry[:3] for entry in seen] == [(DecryptError, 403, NOT_OPEN)] * 4
    assert [entry[3] for entry in seen] == ["another appid"] + ["bad padding"] * 3


# --- the log ----------------------------------------------------------------------------------

def test_refusals_are_logged_escaped_and_once_per_kind(tmp_path, emulator, caplog):
    _, client, builder = build(tmp_path, emulator)
    push = builder.build(make_text("hi"))
    hostile = "/wechat/FAKE%0A[ERROR] store unavailable%0D%1B[31m%00"
    with caplog.at_level(logging.INFO, logger="webhook"):
        for _ in range(100):
            client.simulate_post(hostile, params=push.query, body=push.body)
            client.simulate_post(f"/wechat/{APPID}", body=push.body,
                                 params={**push.query, "msg_signature": "0" * 40})
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "rejected POST /wechat/FAKE\\n[ERROR] store unavailable\\r\\x1b[31m\\x00 status=404 "
        "reason=unknown appid",
        f"rejected POST /wechat/{APPID} status=403 reason=bad signature"]


def test_the_log_says_which_check_a_push_that_does_not_open_failed(tmp_path, emulator, caplog):
    _, client, builder = build(tmp_path, emulator)
    query = builder.build(make_text("hi")).query
    other_app = Cipher(KEY, "wx0000000000000000").encrypt(b"<xml></xml>", random16=bytes(16))
    with caplog.at_level(logging.INFO, logger="webhook"):
        post_encrypt(client, builder, query, other_app)
    assert caplog.records[0].getMessage() == (
        f"rejected POST /wechat/{APPID} status=403 reason={NOT_OPEN} detail=another appid")


def test_store_failures_and_bugs_are_logged_escaped_and_once_per_interval(caplog):
    """A 503 (WeChat delivers the push again) and a 500 (a bug: falcon's own handler would
    write the raw path and query string) log like refusals."""
    clock = FakeClock(0.0)
    app = falcon.App()
    add_error_handlers(app, repeats=Repeats(10.0, clock=clock))

    class Failing:
        def on_post(self, req, resp, appid):
            raise StoreError("sqlite:///x.db: disk I/O error")

        def on_get(self, req, resp, appid):
            raise KeyError(appid)

    app.add_route("/wechat/{appid}", Failing())
    client = falcon.testing.TestClient(app)
    hostile = "/wechat/x%0A[ERROR] forged"
    with caplog.at_level(logging.INFO, logger="webhook"):
        for _ in range(20):
            assert client.simulate_post(hostile).text == "store unavailable"
            assert client.simulate_get(hostile).text == "internal error"
        clock.advance(10.0)
        client.simulate_post(hostile)
    assert [record.getMessage() for record in caplog.records] == [
        "store unavailable POST /wechat/x\\n[ERROR] forged: sqlite:///x.db: disk I/O error",
        "internal error GET /wechat/x\\n[ERROR] forged",
        "store unavailable POST /wechat/x\\n[ERROR] forged: sqlite:///x.db: disk I/O error "
        "repeated=19"]
    assert caplog.records[1].exc_info[0] is KeyError
