"""parsing.py: hostile bodies, exact values, XML == JSON, rendering."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, strategies as st

from webhook.errors import MalformedRequest
from webhook.push.messages import (EnterSessionEvent, Event, ImageMessage, MiniProgramPageMessage,
                                   TextMessage, UnknownMessage)
from webhook.push.parsing import (cdata, message_fields, parse_body, render, to_message,
                                  transfer_fields)

COMMON = {"ToUserName": "toUser", "FromUserName": "fromUser", "CreateTime": 1482048670}

# The same push in both formats: docs/protocol.md §2.6, §3.1-§3.5 (JSON shapes as documented).
PUSHES: dict[str, dict[str, Any]] = {
    "text": {**COMMON, "MsgType": "text", "Content": "this is a test", "MsgId": 1234567890123456},
    "text_v3": {"ToUserName": "gh_10f6c3c3ac5a", "FromUserName": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
                "CreateTime": 1409735668, "MsgType": "text", "Content": "  abcdteT \n",
                "MsgId": 6054768590064713728},
    "image": {**COMMON, "MsgType": "image", "PicUrl": "this is a url", "MediaId": "media_id",
              "MsgId": 1234567890123456},
    "miniprogrampage": {**COMMON, "MsgType": "miniprogrampage", "MsgId": 1234567890123456,
                        "Title": "title", "AppId": "appid", "PagePath": "path", "ThumbUrl": "",
                        "ThumbMediaId": ""},
    "enter_session": {**COMMON, "MsgType": "event", "Event": "user_enter_tempsession",
                      "SessionFrom": "sessionFrom"},
    "debug_demo": {"ToUserName": "gh_97417a04a28d", "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
                   "CreateTime": 1714112445, "MsgType": "event", "Event": "debug_demo",
                   "debug_str": "hello world"},
    "unknown": {**COMMON, "MsgType": "voice", "MediaId": "m1", "Format": "amr",
                "Recognition": "你好 <b>&amp;</b> ]]> done", "MsgId": 99},
    "kf_create": {"ToUserName": "touser", "FromUserName": "fromuser", "CreateTime": 1399197672,
                  "MsgType": "event", "Event": "kf_create_session", "KfAccount": "test1@test"},
    "kf_switch": {"ToUserName": "touser", "FromUserName": "fromuser", "CreateTime": 1399197672,
                  "MsgType": "event", "Event": "kf_switch_session", "FromKfAccount": "test1@test",
                  "ToKfAccount": "test2@test"},
    "unknown_ints": {**COMMON, "MsgType": "event", "Event": "wxa_media_check", "isrisky": 0,
                     "status_code": 0, "trace_id": "967e945cd8a3e458f3c74dcb886068e9"},
}


def as_xml(fields: dict[str, Any], *, pretty: bool = False) -> bytes:
    sep = "\n   " if pretty else ""
    parts = []
    for key, value in fields.items():
        inner = str(value) if isinstance(value, int) else cdata(value)
        parts.append(f"{sep}<{key}>{inner}</{key}>")
    return f"<xml>{''.join(parts)}{sep and chr(10)}</xml>".encode()


def as_json(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


# --- XML and JSON give equal messages ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PUSHES))
@pytest.mark.parametrize("pretty", [False, True])
def test_xml_and_json_give_equal_messages(name: str, pretty: bool) -> None:
    fields = PUSHES[name]
    from_xml = to_message(parse_body(as_xml(fields, pretty=pretty), "xml"))
    from_json = to_message(parse_body(as_json(fields), "json"))
    assert from_xml == from_json
    assert hash(from_xml) == hash(from_json)


def test_types_and_values() -> None:
    def message(name: str) -> Any:
        return to_message(parse_body(as_xml(PUSHES[name]), "xml"))

    text = message("text_v3")
    assert isinstance(text, TextMessage)
    assert text.msg_id == 6054768590064713728 and text.create_time == 1409735668
    assert text.content == "  abcdteT \n" and text.openid == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
    image = message("image")
    assert isinstance(image, ImageMessage) and (image.pic_url, image.media_id) == (
        "this is a url", "media_id")
    card = message("miniprogrampage")
    assert isinstance(card, MiniProgramPageMessage)
    assert (card.title, card.app_id, card.page_path) == ("title", "appid", "path")
    assert card.thumb_url == card.thumb_media_id == ""
    enter = message("enter_session")
    assert isinstance(enter, EnterSessionEvent) and enter.session_from == "sessionFrom"
    assert enter.msg_id is None
    demo = message("debug_demo")
    assert type(demo) is Event and demo.event == "debug_demo"
    assert demo.get("debug_str") == "hello world"
    unknown = message("unknown")
    assert isinstance(unknown, UnknownMessage) and unknown.msg_type == "voice"
    assert unknown.extra == (("Format", "amr"), ("MediaId", "m1"),
                             ("Recognition", "你好 <b>&amp;</b> ]]> done"))
    switch = message("kf_switch")
    assert type(switch) is Event and switch.event == "kf_switch_session"
    assert switch.get("ToKfAccount") == "test2@test"
    assert message("unknown_ints").get("isrisky") == "0"


def test_msg_id_keeps_its_exact_64_bit_value() -> None:
    for body, fmt in ((b'{"ToUserName":"a","FromUserName":"b","CreateTime":1,"MsgType":"text",'
                       b'"MsgId":6054768590064713728}', "json"),
                      (b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>"
                       b"<CreateTime>1</CreateTime><MsgType>text</MsgType>"
                       b"<MsgId>6054768590064713728</MsgId></xml>",
                       "xml")):
        message = to_message(parse_body(body, fmt))
        assert message.msg_id == 6054768590064713728
        assert message.dedupe_key == "msg:6054768590064713728"
        assert type(message.msg_id) is int
    # one more than the official id is not a float value: only an exact parse keeps it
    odd = to_message(parse_body(b'{"ToUserName":"a","FromUserName":"b","CreateTime":1,'
                                b'"MsgType":"text","MsgId":6054768590064713729}', "json"))
    assert odd.msg_id == 6054768590064713729 != int(float(6054768590064713729))


def test_cloud_path_string_msg_id_is_accepted() -> None:
    body = ('{"FromUserName":"ohl4L0Rnhq7vmmbT_DaNQa4ePaz0","ToUserName":"wx3d289323f5900f8e",'
            '"Content":"测试","CreateTime":1555684067,'
            '"MsgId":"49d72d67b16d115e7935ac386f2f0fa41535298877_1555684067","MsgType":"text"}')
    message = to_message(parse_body(body.encode(), "json"))
    assert message.msg_id == "49d72d67b16d115e7935ac386f2f0fa41535298877_1555684067"
    assert message.content == "测试"
    assert to_message({**PUSHES["text"], "MsgId": "1234567890123456"}).msg_id == 1234567890123456
    assert to_message({**PUSHES["text"], "CreateTime": "1482048670"}).create_time == 1482048670


@pytest.mark.parametrize("missing", ["ToUserName", "FromUserName", "CreateTime", "MsgType"])
def test_missing_required_fields_are_malformed(missing: str) -> None:
    fields = {k: v for k, v in PUSHES["text"].items() if k != missing}
    with pytest.raises(MalformedRequest, match=missing):
        to_message(fields)
    with pytest.raises(MalformedRequest):
        to_message({**PUSHES["text"], missing: ""})


def test_huge_digit_strings_do_not_crash() -> None:
    assert to_message({**PUSHES["text"], "MsgId": "9" * 5000}).msg_id == "9" * 5000
    with pytest.raises(MalformedRequest):
        to_message({**PUSHES["text"], "CreateTime": "9" * 5000})


@pytest.mark.parametrize("value", ["soon", "1.5", "-1", " ", True, 1.5, None, [1], {"a": 1}])
def test_create_time_must_be_an_integer(value: Any) -> None:
    with pytest.raises(MalformedRequest):
        to_message({**PUSHES["text"], "CreateTime": value})


def test_unmodelled_values_become_text() -> None:
    fields = {**COMMON, "MsgType": "event", "Event": "x", "n": 5, "f": 1.5, "b": True,
              "z": None, "nested": {"B": 2, "A": "x"}, "items": [1, "a"]}
    message = to_message(fields)
    assert dict(message.extra) == {"n": "5", "f": "1.5", "b": "true", "z": "",
                                   "nested": '{"A":"x","B":2}', "items": '[1,"a"]'}
    assert [key for key, _ in message.extra] == sorted(key for key, _ in message.extra)


# --- message_fields / render / transfer ----------------------------------------------------

@pytest.mark.parametrize("name", sorted(PUSHES))
def test_message_fields_is_the_inverse_of_to_message(name: str) -> None:
    message = to_message(PUSHES[name])
    assert to_message(message_fields(message)) == message
    expected = {k: (v if isinstance(v, str) or k in ("CreateTime", "MsgId") else str(v))
                for k, v in PUSHES[name].items()}
    assert message_fields(message) == expected


@pytest.mark.parametrize("name", sorted(PUSHES))
@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_render_then_parse_round_trips(name: str, fmt: str) -> None:
    message = to_message(PUSHES[name])
    assert to_message(parse_body(render(message_fields(message), fmt).encode(), fmt)) == message


def test_render_xml_style() -> None:
    text = render({"ToUserName": "touser", "CreateTime": 1399197672, "Content": "a]]>b"}, "xml")
    assert text == ("<xml><ToUserName><![CDATA[touser]]></ToUserName><CreateTime>1399197672"
                    "</CreateTime><Content><![CDATA[a]]]]><![CDATA[>b]]></Content></xml>")
    assert parse_body(text.encode(), "xml")["Content"] == "a]]>b"
    with pytest.raises(TypeError):
        render({"x": 1.5}, "xml")


def test_render_json_is_compact_utf8() -> None:
    assert render({"Content": "你好", "CreateTime": 1}, "json") == '{"Content":"你好","CreateTime":1}'


@given(st.text())
def test_cdata_holds_any_text(text: str) -> None:
    body = render({"Content": text.replace("\r", "").replace("\x00", "")}, "xml")
    if all(ch in "\t\n" or ord(ch) >= 0x20 and not 0xD800 <= ord(ch) <= 0xDFFF
           and ch not in "\ufffe\uffff" for ch in text):
        assert parse_body(body.encode(), "xml")["Content"] == text.replace("\r", "")


def test_transfer_fields() -> None:
    message = to_message(PUSHES["text"])
    assert transfer_fields(message, now=1399197672) == {
        "ToUserName": "fromUser", "FromUserName": "toUser", "CreateTime": 1399197672,
        "MsgType": "transfer_customer_service"}


# --- hostile and malformed bodies ----------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&lol9;</Content></xml>"""

HOSTILE = {
    "billion_laughs": BILLION_LAUGHS,
    # "<xml" in a comment hides the DOCTYPE from the prolog check; expat still refuses it
    "hidden_doctype": b"<!-- <xml --><!DOCTYPE xml [<!ENTITY a 'aaaaaaaaaa'>"
                      b"<!ENTITY b '&a;&a;&a;'>]><xml><Content>&b;</Content></xml>",
    "xxe_file": b'<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                b"<xml><Content>&xxe;</Content></xml>",
    "xxe_parameter": b'<!DOCTYPE xml [<!ENTITY % p SYSTEM "http://127.0.0.1:1/x.dtd"> %p;]>'
                     b"<xml><a>1</a></xml>",
    "external_dtd": b'<?xml version="1.0"?><!DOCTYPE xml SYSTEM "http://127.0.0.1:1/x.dtd">'
                    b"<xml><a>1</a></xml>",
    "bare_doctype": b"<!DOCTYPE xml><xml><a>1</a></xml>",
    "undefined_entity": b"<xml><a>&lol;</a></xml>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_doctypes_and_entities_are_refused_fast(name: str) -> None:
    started = time.perf_counter()
    with pytest.raises(MalformedRequest) as info:
        parse_body(HOSTILE[name], "xml")
    assert info.value.status == 400
    assert time.perf_counter() - started < 0.1


def test_doctype_text_inside_cdata_is_content() -> None:
    body = as_xml({**COMMON, "MsgType": "text", "Content": '<!DOCTYPE html><!ENTITY x "y">'})
    assert to_message(parse_body(body, "xml")).content == '<!DOCTYPE html><!ENTITY x "y">'


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe4\xbd"])
def test_invalid_utf8_is_refused(fmt: str, bad: bytes) -> None:
    body = (b"<xml><Content>" + bad + b"</Content></xml>" if fmt == "xml"
            else b'{"Content":"' + bad + b'"}')
    with pytest.raises(MalformedRequest, match="UTF-8"):
        parse_body(body, fmt)


def test_declared_encoding_is_ignored_body_is_utf8() -> None:
    body = '<?xml version="1.0" encoding="GBK"?><xml><a>中文</a></xml>'.encode()
    assert parse_body(body, "xml") == {"a": "中文"}


@pytest.mark.parametrize("body", [
    b"", b"   ", b"<xml>", b"<xml><a>1</b></xml>", b"<other><a>1</a></other>",
    b"<xml><a>1</a><a>2</a></xml>", b"<xml><a>1</a></xml><xml/>", b"plain text", b"{}",
    b"<xml><a>" + b"<b>" * 40 + b"x" + b"</b>" * 40 + b"</a></xml>",
    b"<xml>" + b"<b>" * 50_000 + b"</b>" * 50_000 + b"</xml>", b"<xml><a>&b;</a></xml>",
])
def test_malformed_xml(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_body(body, "xml")


@pytest.mark.parametrize("body", [
    b"", b"[]", b'"text"', b"1", b"null", b"{", b'{"a":1}x', b'{"a":NaN}', b'{"a":Infinity}',
    b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"[" * 100_000, b'{"a":' * 5000,
])
def test_malformed_json(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_body(body, "json")


def test_xml_shapes() -> None:
    assert parse_body(b"<xml></xml>", "xml") == {}
    assert parse_body(b"<xml> text <a>1</a></xml>", "xml") == {"a": "1"}  # root text ignored
    assert parse_body(b"<xml><action>CheckContainerPath</action></xml>", "xml") == {
        "action": "CheckContainerPath"}
    assert parse_body(b'<xml a="1"><b c="2">x</b><e/>\n</xml>', "xml") == {"b": "x", "e": ""}
    assert parse_body(b"<xml><a>\n <b>1</b>\n <b>2</b> <c/>\n</a></xml>", "xml") == {
        "a": {"b": ["1", "2"], "c": ""}}
    assert parse_body(b"<xml><a>&lt;&amp;&#x4E2D;</a></xml>", "xml") == {"a": "<&中"}
    assert parse_body(b"<xml><a> x <b>1</b></a></xml>", "xml") == {"a": {"b": "1", "#text": " x "}}
    deep = b"<xml>" + b"<b>" * 32 + b"x" + b"</b>" * 32 + b"</xml>"
    value = parse_body(deep, "xml")["b"]
    for _ in range(31):
        value = value["b"]
    assert value == "x"


def test_json_keeps_ints_exact() -> None:
    fields = parse_body(b'{"a":18446744073709551615,"b":-1,"c":{"d":[1]}}', "json")
    assert fields == {"a": 18446744073709551615, "b": -1, "c": {"d": [1]}}
    assert type(fields["a"]) is int


def test_unknown_format() -> None:
    with pytest.raises(ValueError):
        parse_body(b"{}", "yaml")


def test_the_safe_mode_envelope_reads_as_wechat_lays_it_out() -> None:
    body = (b"<xml>\n    <ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n"
            b"    <Encrypt><![CDATA[D7yzvUNAL930rd28wf21s4hv+/=]]></Encrypt>\n</xml>\n")
    assert parse_body(body, "xml") == {"ToUserName": "gh_97417a04a28d",
                                       "Encrypt": "D7yzvUNAL930rd28wf21s4hv+/="}
