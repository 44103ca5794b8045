"""parsing.py: hostile bodies, exact values, XML == JSON, the envelope fast path, peek, rendering."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from webhook.errors import MalformedRequest
from webhook.push.messages import (EnterSessionEvent, Event, ImageMessage, MiniProgramPageMessage,
                                   TextMessage, UnknownMessage)
from webhook.push.parsing import (cdata, message_fields, parse_body, parse_envelope, peek, render,
                                  to_message, transfer_fields)

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
    for parse in (parse_body, parse_envelope):
        with pytest.raises(MalformedRequest) as info:
            parse(HOSTILE[name], "xml")
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
    with pytest.raises(MalformedRequest, match="UTF-8"):
        parse_envelope(body, fmt)


def test_declared_encoding_is_ignored_body_is_utf8() -> None:
    body = '<?xml version="1.0" encoding="GBK"?><xml><a>中文</a></xml>'.encode()
    assert parse_body(body, "xml") == {"a": "中文"}


@pytest.mark.parametrize("body", [
    b"", b"   ", b"<xml>", b"<xml><a>1</b></xml>", b"<other><a>1</a></other>",
    b"<xml><a>1</a><a>2</a></xml>", b"<xml><a>1</a></xml><xml/>", b"plain text", b"{}",
    b"<xml><a>" + b"<b>" * 40 + b"x" + b"</b>" * 40 + b"</a></xml>",
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


def test_json_keeps_ints_exact() -> None:
    fields = parse_body(b'{"a":18446744073709551615,"b":-1,"c":{"d":[1]}}', "json")
    assert fields == {"a": 18446744073709551615, "b": -1, "c": {"d": [1]}}
    assert type(fields["a"]) is int


def test_unknown_format() -> None:
    with pytest.raises(ValueError):
        parse_body(b"{}", "yaml")


# --- the envelope fast path ----------------------------------------------------------------

def test_envelope_fast_path() -> None:
    body = (b"<xml>\n    <ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n"
            b"    <Encrypt><![CDATA[D7yzvUNAL930rd28wf21s4hv+/=]]></Encrypt>\n</xml>\n")
    assert parse_envelope(body, "xml") == {"ToUserName": "gh_97417a04a28d",
                                           "Encrypt": "D7yzvUNAL930rd28wf21s4hv+/="}


_SPACE = st.text(" \t\r\n", max_size=3)
_VALUE = st.text(st.sampled_from("abcAZ09+/= _-<>&]![CDATA\t\né"), max_size=12)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    tidy = draw(st.booleans())   # WeChat's layout, both values in CDATA (the one-pass shape)
    names = ["ToUserName", "Encrypt"] if tidy else draw(st.lists(
        st.sampled_from(["ToUserName", "Encrypt", "MsgType", "Encrypt "]), max_size=3))
    parts = [draw(_SPACE), draw(st.sampled_from(["<xml>", "<xml >", "<?xml version='1.0'?><xml>"]))]
    for name in names:
        value = draw(_VALUE)
        if tidy or draw(st.booleans()):
            value = f"<![CDATA[{value}]]>"
        parts += [draw(_SPACE), f"<{name}>{value}</{name.strip()}>"]
    parts += [draw(_SPACE), "</xml>", draw(_SPACE)]
    return "".join(parts).encode()


@settings(max_examples=300)
@given(envelopes())
def test_envelope_fast_path_agrees_with_xmltodict(body: bytes) -> None:
    try:
        expected: Any = parse_body(body, "xml")
    except MalformedRequest:
        expected = MalformedRequest
    try:
        got: Any = parse_envelope(body, "xml")
    except MalformedRequest:
        got = MalformedRequest
    assert got == expected


# --- the expat fast path for flat messages agrees with xmltodict ------------------------------

_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)
_values = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
                    st.integers(min_value=0, max_value=2**64))


@given(st.dictionaries(_names, _values, max_size=8), st.sampled_from(["", "\n", "\n  "]))
def test_flat_fast_path_agrees_with_xmltodict(fields, sep):
    from webhook.push.parsing import _flat_xml, _xmltodict_fields

    body = render(fields, "xml").replace("><", f">{sep}<").encode("utf-8")
    assert _flat_xml(body) == _xmltodict_fields(body)


def test_nested_xml_goes_through_xmltodict():
    body = b"<xml><A>1</A><B><C>x</C><D>y</D></B></xml>"
    assert parse_body(body, "xml") == {"A": "1", "B": {"C": "x", "D": "y"}}


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><xml><A>&a;</A></xml>',
    b"<other><A>1</A></other>", b"<xml><A>1</A><A>2</A></xml>", b"<xml><A>1</xml>"])
def test_fast_path_refuses_like_xmltodict(body):
    with pytest.raises(MalformedRequest):
        parse_body(body, "xml")


# --- peek: MsgType and Content without a parse ----------------------------------------------

@pytest.mark.parametrize("name", sorted(set(PUSHES) - {"unknown"}))   # (it splits a CDATA)
@pytest.mark.parametrize("fmt", ["xml", "xml-pretty", "json"])
def test_peek_reads_every_documented_push(name: str, fmt: str) -> None:
    fields = PUSHES[name]
    body = as_json(fields) if fmt == "json" else as_xml(fields, pretty=fmt == "xml-pretty")
    content = fields["Content"] if fields["MsgType"] == "text" else ""
    assert peek(body, fmt.partition("-")[0]) == (fields["MsgType"], content)


@pytest.mark.parametrize("body", [
    b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>"
    b"<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>a &amp; b</Content></xml>",
    b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>"
    b"<MsgType>text</MsgType><Content><![CDATA[x]]]]><![CDATA[>y]]></Content></xml>",
    b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>"
    b"<MsgType>text</MsgType><Content>a<!-- c -->b</Content></xml>",
    b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>"
    b"<MsgType>text</MsgType><Content>a\r\nb</Content></xml>",
    b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>x</CreateTime>"
    b"<MsgType>text</MsgType></xml>",
    b"<xml><ToUserName>a</ToUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>",
    b'{"ToUserName": "a", "FromUserName": "b", "CreateTime": 1, "MsgType": "text", '
    b'"Content": "\\u4eba\\u5de5", "Nested": {"a": 1}}',
])
def test_peek_leaves_anything_but_the_plain_shape_to_the_parser(body: bytes) -> None:
    assert peek(body, "json" if body.startswith(b"{") else "xml") is None


_PEEK_TEXT = (st.text(st.sampled_from("ab 人工\t\n]>"), min_size=1, max_size=6)
              | st.text(st.sampled_from("ab 人工\t\n\r<>&]![CDATA\x01\ufffe;#x41"), max_size=10))


@st.composite
def near_plain_documents(draw: st.DrawFn) -> tuple[bytes, str]:
    """Pushes in or near the plain shape: values with markup, entities, CDATA splits and
    characters XML forbids; fields missing, repeated or nested."""
    fmt = draw(st.sampled_from(["xml", "json"]))
    names = ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content"]
    names += draw(st.lists(st.sampled_from([*names, "MsgId", "Extra"]), max_size=2))
    if draw(st.integers(0, 9)) == 0:
        names.remove(draw(st.sampled_from(names)))
    names = draw(st.permutations(names))
    values = {"MsgType": st.sampled_from(["text", "text", "image", "event", ""]),
              "CreateTime": st.sampled_from(["1714112445", " 12 ", "1e3", ""])}
    if fmt == "json":
        fields = {name: draw(values.get(name, _PEEK_TEXT) | st.integers(0, 99)) for name in names}
        if draw(st.booleans()):
            fields["Nested"] = draw(st.sampled_from([{"a": 1}, [1], None, True, 1.5]))
        return json.dumps(fields, ensure_ascii=draw(st.booleans())).encode(), fmt
    tidy = draw(st.booleans())   # else each part may stray from the plain shape
    pick = (lambda *choices: choices[0]) if tidy else (lambda *choices: draw(st.sampled_from(choices)))
    parts = [pick("<xml>", " <xml>", "<xml >")]
    for name in names:
        value = draw(values.get(name, _PEEK_TEXT))
        inner = pick(cdata(value), value, f"<![CDATA[{value}]]>", f"<A>{value}</A>")
        parts.append(pick("", "\n", " x ") + f"<{name}>{inner}</{name}>")
    parts.append("</xml>")
    return "".join(parts).encode(), fmt


_CONTENT = st.text(st.sampled_from("ab 人工\t\n\r]>[<&\x01\x7f\ufffe\uffff"), max_size=12)


@st.composite
def text_pushes(draw: st.DrawFn) -> bytes:
    """Text pushes in WeChat's layout (the one-pass shape), with Content that may hold
    markup, CDATA ends, forbidden characters or invalid UTF-8, ids and times that may not be
    plain."""
    space = st.sampled_from(["", "\n", " \t\n"])
    tidy = draw(st.booleans())   # else the ids and numbers may stray from the shape
    ident = st.sampled_from(["gh_0123456789ab", "o6_x-Y", *([] if tidy else ["a]b", "", "a b", "ä"])])
    number = st.sampled_from(["1714112445", "0", *([] if tidy else ["1" * 21, "", "x"])])
    content = draw(_CONTENT).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 5)) == 0:
        content += draw(st.sampled_from([b"\xff", b"\xe4\xba", b"]]>", b"\x00"]))
    parts = [b"<xml>", f"<ToUserName><![CDATA[{draw(ident)}]]></ToUserName>".encode(),
             f"<FromUserName><![CDATA[{draw(ident)}]]></FromUserName>".encode(),
             f"<CreateTime>{draw(number)}</CreateTime>".encode(),
             f"<MsgType><![CDATA[{'text' if tidy else draw(st.sampled_from(['text', 'image']))}]]></MsgType>".encode(),
             b"<Content><![CDATA[" + content + b"]]></Content>"]
    if draw(st.booleans()):
        parts.append(f"<MsgId>{draw(number)}</MsgId>".encode())
    parts.append(b"</xml>")
    return draw(space).encode() + b"".join(part + draw(space).encode() for part in parts)


@settings(max_examples=1000)
@given(near_plain_documents() | text_pushes().map(lambda body: (body, "xml")))
def test_what_peek_reads_the_parser_reads_alike(document: tuple[bytes, str]) -> None:
    body, fmt = document
    peeked = peek(body, fmt)
    if peeked is None:
        return
    message = to_message(parse_body(body, fmt))
    content = message.content if isinstance(message, TextMessage) else ""
    assert (message.msg_type, content) == peeked


def test_one_pass_text_peek_reads_wechats_layout() -> None:
    body = ("<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>\n"
            "<FromUserName><![CDATA[o6_bench]]></FromUserName><CreateTime>1714112445</CreateTime>"
            "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[转人工 a]b\n]]></Content>"
            "<MsgId>6054768590064713728</MsgId></xml>").encode()
    assert peek(body, "xml") == ("text", "转人工 a]b\n")
