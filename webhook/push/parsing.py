"""Pure parsing: body bytes -> fields (XML via xmltodict, or JSON) -> typed Message, and back.

Hostile input is refused with MalformedRequest: invalid UTF-8, a JSON ``\\ud800`` escape of
half a surrogate pair (XML cannot name one: expat refuses ``&#xD800;``), any DOCTYPE or entity
declaration (billion laughs, XXE), JSON that is not an object. The XML and the JSON form of
one push give equal Message objects (docs/protocol.md §3: same keys in both formats).
"""

from __future__ import annotations

import json
import pyexpat
import re
from collections.abc import Mapping
from typing import Any

import xmltodict

from webhook.errors import MalformedRequest
from webhook.push.messages import (ENTER_SESSION_EVENT, EnterSessionEvent, Event, ImageMessage,
                                   Message, MiniProgramPageMessage, TextMessage, UnknownMessage)
from webhook.wellformed import json_is_text

__all__ = ["parse_body", "parse_envelope", "peek", "read_message", "to_message",
           "message_fields", "render", "cdata", "transfer_fields", "FORMATS"]

FORMATS = ("xml", "json")
_SPACE = " \t\r\n"  # whitespace, the same set in XML and JSON
_MAX_DEPTH = 32  # nesting we keep for unmodelled fields; WeChat nests two levels at most
_MAX_DIGITS = 20  # a uint64 has 20 digits; int() of thousands of digits raises ValueError


# --- body -> fields ------------------------------------------------------------------------

def parse_body(body: bytes, fmt: str) -> dict[str, Any]:
    """The top-level fields of the ``<xml>`` root or of the JSON object.

    XML values are strings (an empty element is ``""``), nested elements dicts; text directly
    inside ``<xml>`` is ignored. JSON values are whatever the object holds, integers exact.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("body is not UTF-8") from None
    if fmt == "json":
        return _parse_json(text)
    if fmt == "xml":
        return _parse_xml(body)
    raise ValueError(f"unknown format {fmt!r}")


def parse_envelope(body: bytes, fmt: str) -> dict[str, Any]:
    """parse_body for the outer body of an encrypted push.

    The safe-mode XML envelope ``<xml><ToUserName>…</ToUserName><Encrypt>…</Encrypt></xml>``
    is read without an XML parser when it has exactly that simple shape (printable ASCII,
    no markup or entity characters in the values); anything else goes through parse_body.
    """
    if fmt == "xml":
        fields = _xml_envelope(body)
        if fields is not None:
            return fields
    return parse_body(body, fmt)


def _refuse_constant(name: str) -> Any:
    raise MalformedRequest(f"JSON constant {name} refused")


# One decoder for every body (json.loads with options would build a new one per call).
# NaN/Infinity are not JSON; json.loads would accept them.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


def _parse_json(text: str) -> dict[str, Any]:
    # raw_decode plus str.strip spares decode()'s two regex passes; strip returns the same
    # object when there is nothing to strip, which is how WeChat sends JSON.
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _JSON.raw_decode(text, start)
    except (ValueError, RecursionError):
        raise MalformedRequest("body is not JSON") from None
    if end != len(text.rstrip(_SPACE)):
        raise MalformedRequest("body is not JSON (data after the object)")
    if not isinstance(value, dict):
        raise MalformedRequest("JSON body is not an object")
    if not json_is_text(text, value):
        raise MalformedRequest("body is not valid Unicode (a lone surrogate)")
    return value


def _refuse_doctype(*_args: Any) -> None:
    raise ValueError("DOCTYPE refused")


class _NoDoctypeExpat:
    """pyexpat whose parsers refuse any DOCTYPE outright: no DTD, no entities, no XXE."""

    @staticmethod
    def ParserCreate(encoding: str | None = None,  # noqa: N802 - the pyexpat name
                     namespace_separator: str | None = None) -> Any:
        parser = pyexpat.ParserCreate(encoding, namespace_separator)
        parser.StartDoctypeDeclHandler = _refuse_doctype
        return parser


def _parse_xml(body: bytes) -> dict[str, Any]:
    # Fast refusal before any parsing. A DOCTYPE can only precede the root element, so only
    # that prolog is searched: a user's text may legitimately contain "<!DOCTYPE" in CDATA.
    root = body.find(b"<xml")
    prolog = body if root < 0 else body[:root]
    if b"<!DOCTYPE" in prolog or b"<!ENTITY" in prolog:
        raise MalformedRequest("XML DOCTYPE/entities refused")
    try:
        flat = _flat_xml(body)
    except (pyexpat.ExpatError, ValueError):
        raise MalformedRequest("body is not well-formed XML (or declares entities)") from None
    return _xmltodict_fields(body) if flat is None else flat


def _xmltodict_fields(body: bytes) -> dict[str, Any]:
    """The root's children of any XML message, nested ones as dicts (the general path)."""
    fields: dict[str, Any] = {}

    def field(path: list[tuple[str, Any]], value: Any) -> bool:
        # Called by xmltodict for each child of the root, as it ends (item_depth=2 streaming
        # is measurably faster than building the whole tree).
        if path[0][0] != "xml":
            raise MalformedRequest("XML root element is not <xml>")
        name = path[1][0]
        if name in fields:
            raise MalformedRequest(f"XML field {name} repeated")
        fields[name] = value if type(value) is str else _clean(value, 1)  # noqa: E721
        return True

    try:
        xmltodict.parse(body, encoding="utf-8", expat=_NoDoctypeExpat, disable_entities=True,
                        xml_attribs=False, strip_whitespace=False, item_depth=2,
                        item_callback=field)
    except (pyexpat.ExpatError, ValueError):
        raise MalformedRequest("body is not well-formed XML (or declares entities)") from None
    return fields


class _Nested(Exception):
    """The document has elements below the root's children: xmltodict reads it instead."""


def _flat_xml(body: bytes) -> dict[str, str] | None:
    """A message whose fields are all plain elements under ``<xml>``, read with expat itself.

    Every push WeChat documents has this shape, and xmltodict's Python layer costs more than
    twice the parse here; anything nested returns None and goes through xmltodict. The result
    is what the xmltodict path gives (a property test holds them equal), and DOCTYPEs and
    entity declarations are refused the same way.
    """
    fields: dict[str, str] = {}
    text: list[str] = []
    depth = 0

    def start(name: str, attrs: Any) -> None:
        nonlocal depth
        depth += 1
        if depth == 1 and name != "xml":
            raise MalformedRequest("XML root element is not <xml>")
        if depth == 3:
            raise _Nested
        text.clear()

    def end(name: str) -> None:
        nonlocal depth
        if depth == 2:
            if name in fields:
                raise MalformedRequest(f"XML field {name} repeated")
            fields[name] = "".join(text)
        depth -= 1

    def chars(data: str) -> None:
        if depth == 2:
            text.append(data)

    parser = pyexpat.ParserCreate("utf-8")
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(body, True)
    except _Nested:
        return None
    return fields


def _clean(value: Any, depth: int) -> Any:
    """Empty elements -> "", indentation between nested elements dropped."""
    if value is None:
        return ""
    if depth > _MAX_DEPTH:
        raise MalformedRequest("XML nested too deeply")
    if isinstance(value, list):
        return [_clean(item, depth + 1) for item in value]
    if isinstance(value, dict):
        text = value.get("#text")
        if text is not None and not text.strip(_SPACE):
            del value["#text"]
        return {key: _clean(item, depth + 1) for key, item in value.items()}
    return value


# (name, open tag, close tag of a bare value, close tag of a CDATA value)
_ENVELOPE_TAGS = tuple((name, f"<{name}>".encode(), f"</{name}>".encode(),
                        f"]]></{name}>".encode()) for name in ("ToUserName", "Encrypt"))
_BYTE_SPACE = _SPACE.encode()
# What an envelope value may hold: printable ASCII except markup and entity characters.
_PLAIN = bytes(range(0x20, 0x7F)).translate(None, b"<&]")


# The envelope as WeChat lays it out, both values in CDATA: one pass. ToUserName holds _PLAIN
# bytes, an Encrypt base64 alone.
_SAFE_ENVELOPE = re.compile(
    rb"[ \t\r\n]*<xml>[ \t\r\n]*<ToUserName><!\[CDATA\[([" + re.escape(_PLAIN) + rb"]*)\]\]>"
    rb"</ToUserName>[ \t\r\n]*<Encrypt><!\[CDATA\[([A-Za-z0-9+/=]*)\]\]></Encrypt>[ \t\r\n]*"
    rb"</xml>[ \t\r\n]*")


def _xml_envelope(body: bytes) -> dict[str, str] | None:
    """The safe-mode envelope read by hand, or None if the body is anything more complex.

    Accepts only ``<xml>``, then ToUserName/Encrypt elements (each at most once, values in
    CDATA or bare) separated by XML whitespace, then ``</xml>``. Values must be printable
    ASCII without ``<``, ``&`` or ``]``, so the result is exactly what xmltodict would give
    and no entity, DOCTYPE or markup can hide in it.
    """
    envelope = _SAFE_ENVELOPE.fullmatch(body)
    if envelope is not None:
        return {"ToUserName": envelope[1].decode("ascii"), "Encrypt": envelope[2].decode("ascii")}
    doc = body.strip(_BYTE_SPACE)
    if not (doc.startswith(b"<xml>") and doc.endswith(b"</xml>")):
        return None
    fields: dict[str, str] = {}
    pos, end = 5, len(doc) - 6
    while True:
        tag = doc.find(b"<", pos, end)
        if tag != pos and doc[pos:end if tag < 0 else tag].strip(_BYTE_SPACE):
            return None  # text between elements
        if tag < 0:
            return fields
        for name, open_tag, close_tag, close_cdata in _ENVELOPE_TAGS:
            if doc.startswith(open_tag, tag):
                break
        else:
            return None
        start = tag + len(open_tag)
        # Values hold no "<" or "]", so one-byte searches find where they end.
        if doc.startswith(b"<![CDATA[", start):
            start += 9
            stop, close_tag = doc.find(b"]", start, end), close_cdata
        else:
            stop = doc.find(b"<", start, end)
        if stop < 0 or not doc.startswith(close_tag, stop, end) or name in fields:
            return None
        value = doc[start:stop]
        if value.translate(None, _PLAIN):
            return None  # a byte that is not plain printable ASCII
        fields[name] = value.decode("ascii")
        pos = stop + len(close_tag)


# --- peek: what routing needs to know before answering, without a Message -------------------

# Characters XML forbids (expat refuses them) and CR (expat rewrites it): none may appear.
_NOT_ASCII_CHAR = r"\x00-\x08\x0b\x0c\x0e-\x1f\r"
_NOT_CHAR = _NOT_ASCII_CHAR + r"\ufffe\uffff"


def _no_cdata_end(excluded: str) -> str:
    """Characters outside ``excluded`` and "]", and "]" not starting "]]>"."""
    return rf"[^\]{excluded}]*(?:\](?!\]>)[^\]{excluded}]*)*"


# A field of the plain shape: one CDATA section, or text with no markup or entity, holding
# no "]]>" either way; its value is then exactly the characters between the tags.
_PLAIN_FIELD = (rf"<(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)>(?:"
                rf"<!\[CDATA\[({_no_cdata_end(_NOT_CHAR)})\]\]>"
                rf"|({_no_cdata_end('<&' + _NOT_CHAR)}))</(?P=name)>")
_FIELD = re.compile(_PLAIN_FIELD)
_PLAIN_XML = re.compile(rf"[ \t\n]*<xml>((?:[ \t\n]*{_PLAIN_FIELD})*)[ \t\n]*</xml>[ \t\n]*")
# A text push laid out as WeChat sends it (docs/protocol.md §3.1), read in one pass over the bytes:
# ids in printable ASCII, numbers in digits, the Content one CDATA section whose bytes hold no
# character XML forbids (U+FFFE/U+FFFF are checked once it is decoded). Everything around the
# Content is ASCII, so decoding the Content checks the whole body is UTF-8.
_ID = rb"<!\[CDATA\[[!-\\^-~]+\]\]>"
_TEXT_PUSH = re.compile(
    rb"[ \t\n]*<xml>[ \t\n]*<ToUserName>" + _ID + rb"</ToUserName>[ \t\n]*"
    rb"<FromUserName>" + _ID + rb"</FromUserName>[ \t\n]*<CreateTime>[0-9]{1,20}</CreateTime>"
    rb"[ \t\n]*<MsgType><!\[CDATA\[text\]\]></MsgType>[ \t\n]*<Content><!\[CDATA\["
    rb"(" + _no_cdata_end(_NOT_ASCII_CHAR).encode() + rb")\]\]></Content>[ \t\n]*"
    rb"(?:<MsgId>[0-9]{1,20}</MsgId>[ \t\n]*)?</xml>[ \t\n]*")


def peek(body: bytes, fmt: str) -> tuple[str, str] | None:
    """(MsgType, Content) of a push, read with regex passes instead of a parse (one for a
    text push in WeChat's layout, two for any other): enough for routing to know the push is
    not a hand-off (Content is "" unless MsgType is text).

    Only the plain shape every WeChat push has is read: flat fields, each one CDATA section
    or plain text (JSON: strings and integers), the required fields present. Anything else
    gives None, and the caller parses. Whatever ``peek`` reads, ``to_message(parse_body())``
    reads too, without error and with the same MsgType and Content (a property test).
    """
    if fmt == "xml":
        text_push = _TEXT_PUSH.fullmatch(body)
        if text_push is not None:
            try:
                content = text_push[1].decode("utf-8")
            except UnicodeDecodeError:
                return None
            return None if "\ufffe" in content or "\uffff" in content else ("text", content)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if fmt == "xml":
        document = _PLAIN_XML.fullmatch(text)
        if document is None:
            return None
        found = _FIELD.findall(text, document.start(1), document.end(1))
        fields: dict[str, Any] = {name: cdata or plain for name, cdata, plain in found}
        if len(fields) != len(found):
            return None   # a repeated field: parse_body refuses it
    else:
        try:
            fields = _parse_json(text)
        except MalformedRequest:
            return None
        if not all(type(value) in (str, int) for value in fields.values()):  # noqa: E721
            return None   # bool, float, null, nested: left to the parser's rules
    msg_type, content = fields.get("MsgType"), fields.get("Content", "")
    for name in ("MsgType", "ToUserName", "FromUserName"):
        if type(fields.get(name)) is not str or not fields[name]:  # noqa: E721
            return None
    try:
        _create_time(fields.get("CreateTime"))
    except MalformedRequest:
        return None
    if msg_type != "text":
        return msg_type, ""
    return (msg_type, content) if type(content) is str else None  # noqa: E721


# --- fields <-> Message --------------------------------------------------------------------

_COMMON = frozenset({"ToUserName", "FromUserName", "CreateTime", "MsgType", "MsgId"})
# wire key -> Message attribute, per MsgType (docs/protocol.md §3.1-§3.4)
_TYPES: dict[str, tuple[type[Message], dict[str, str]]] = {
    "text": (TextMessage, {"Content": "content"}),
    "image": (ImageMessage, {"PicUrl": "pic_url", "MediaId": "media_id"}),
    "miniprogrampage": (MiniProgramPageMessage, {
        "Title": "title", "AppId": "app_id", "PagePath": "page_path", "ThumbUrl": "thumb_url",
        "ThumbMediaId": "thumb_media_id"}),
    "event": (Event, {"Event": "event"}),
}
_ENTER_SESSION = (EnterSessionEvent, {"Event": "event", "SessionFrom": "session_from"})
_ATTRS: dict[type[Message], dict[str, str]] = {
    cls: {attr: key for key, attr in names.items()}
    for cls, names in (*_TYPES.values(), _ENTER_SESSION)}


def _text(value: Any) -> str:
    """A field value as the text XML would carry: ints decimal, objects compact JSON."""
    if type(value) is str:  # noqa: E721
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        raise MalformedRequest("field value cannot be read as text") from None


def _required(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key)
    if type(value) is str and value:  # noqa: E721 - the hot path
        return value
    if value is None or value == "":
        raise MalformedRequest(f"{key} is missing")
    return _text(value)


def _create_time(value: Any) -> int:
    if type(value) is int:  # noqa: E721 - bool is not a time
        return value
    if isinstance(value, str):
        value = value.strip(_SPACE)
        if value.isdigit() and value.isascii() and len(value) <= _MAX_DIGITS:
            return int(value)
    raise MalformedRequest("CreateTime is missing or not an integer")


def _msg_id(value: Any) -> int | str | None:
    """Exact 64-bit MsgId as an int; a string on the cloud-function path (docs/protocol.md §3)."""
    if type(value) is int or value is None:  # noqa: E721
        return value
    if type(value) is str and value.isdigit() and value.isascii() \
            and len(value) <= _MAX_DIGITS:  # noqa: E721 - the XML hot path
        return int(value)
    text = _text(value).strip(_SPACE)
    if not text:
        return None
    return int(text) if text.isdigit() and text.isascii() and len(text) <= _MAX_DIGITS else text


def to_message(fields: Mapping[str, Any]) -> Message:
    """The typed Message of a push's fields; unmodelled fields go to ``extra`` as text."""
    msg_type = _required(fields, "MsgType")
    cls, names = _TYPES.get(msg_type, (UnknownMessage, {}))
    if cls is Event and fields.get("Event") == ENTER_SESSION_EVENT:
        cls, names = _ENTER_SESSION
    known: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for key, value in fields.items():
        if key in _COMMON:
            continue
        attr = names.get(key)
        if attr is None:
            extra.append((key, _text(value)))
        else:
            known[attr] = _text(value)
    extra.sort()
    return cls(to_user=_required(fields, "ToUserName"),
               from_user=_required(fields, "FromUserName"),
               create_time=_create_time(fields.get("CreateTime")), msg_type=msg_type,
               msg_id=_msg_id(fields.get("MsgId")), extra=tuple(extra), **known)


def read_message(body: bytes, fmt: str) -> Message:
    """The typed Message of a decrypted push body; MalformedRequest if it is not one."""
    return to_message(parse_body(body, fmt))


def message_fields(message: Message) -> dict[str, Any]:
    """The wire fields of a Message (inverse of to_message); ints stay ints."""
    fields: dict[str, Any] = {"ToUserName": message.to_user, "FromUserName": message.from_user,
                              "CreateTime": message.create_time, "MsgType": message.msg_type}
    for attr, key in _ATTRS.get(type(message), {}).items():
        fields[key] = getattr(message, attr)
    if message.msg_id is not None:
        fields["MsgId"] = message.msg_id
    fields.update(message.extra)
    return fields


# --- fields -> body ------------------------------------------------------------------------

def cdata(text: str) -> str:
    """A CDATA section holding ``text`` exactly."""
    # "]]>" cannot occur inside CDATA: end the section before ">" and open a new one.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render(fields: Mapping[str, Any], fmt: str) -> str:
    """A flat body: XML with CDATA strings and bare ints (WeChat's style), or compact JSON."""
    if fmt == "json":
        return json.dumps(dict(fields), ensure_ascii=False, separators=(",", ":"))
    if fmt != "xml":
        raise ValueError(f"unknown format {fmt!r}")
    parts = ["<xml>"]
    for key, value in fields.items():
        if isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"<{key}>{value}</{key}>")
        elif isinstance(value, str):
            parts.append(f"<{key}>{cdata(value)}</{key}>")
        else:
            raise TypeError(f"cannot render {key}={value!r} as XML")
    parts.append("</xml>")
    return "".join(parts)


def transfer_fields(message: Message, *, now: int) -> dict[str, Any]:
    """The passive ``transfer_customer_service`` reply to ``message`` (docs/protocol.md §4.4)."""
    return {"ToUserName": message.openid, "FromUserName": message.to_user, "CreateTime": now,
            "MsgType": "transfer_customer_service"}
