"""Pure parsing: body bytes -> fields (XML via expat, or JSON) -> typed Message, and back.

Hostile input is refused with MalformedRequest: invalid UTF-8, a JSON ``\\ud800`` escape of
half a surrogate pair (XML cannot name one: expat refuses ``&#xD800;``), any DOCTYPE or entity
declaration (billion laughs, XXE), JSON that is not an object. The XML and the JSON form of
one push give equal Message objects (docs/protocol.md §3: same keys in both formats).
"""

from __future__ import annotations

import json
import pyexpat
from collections.abc import Mapping
from typing import Any

from webhook.errors import MalformedRequest
from webhook.push.messages import (ENTER_SESSION_EVENT, EnterSessionEvent, Event, ImageMessage,
                                   Message, MiniProgramPageMessage, TextMessage, UnknownMessage)
from webhook.wellformed import NotText, loads

__all__ = ["parse_body", "read_message", "to_message", "message_fields", "render", "cdata",
           "transfer_fields", "FORMATS"]

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


def _parse_json(text: str) -> dict[str, Any]:
    try:
        value = loads(text)
    except NotText:
        raise MalformedRequest("body is not valid Unicode (a lone surrogate)") from None
    except (ValueError, RecursionError):
        raise MalformedRequest("body is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedRequest("JSON body is not an object")
    return value


def _refuse_declaration(*_args: Any) -> None:
    raise MalformedRequest("XML DOCTYPE/entities refused")


# Our own expat handlers rather than xmltodict's: bench/push_cost.py ("of which parse_body")
# shows them taking half the time per push, and a push is parsed twice (envelope, message).
class _Fields:
    """The root's children as expat reports them: one pass, no tree kept beyond them.

    A leaf is its text ("" when empty); an element with children is a dict of them, a
    repeated child a list, and its own text is kept as ``#text`` only when it is not
    whitespace (the indentation between nested elements).
    """

    __slots__ = ("fields", "_open")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self._open: list[list[Any]] = []  # [children dict or None, text pieces] per element

    def start(self, name: str, _attributes: Any) -> None:
        opened = self._open
        if not opened:
            if name != "xml":
                raise MalformedRequest("XML root element is not <xml>")
        elif len(opened) > _MAX_DEPTH:
            raise MalformedRequest("XML nested too deeply")
        elif opened[-1][0] is None:
            opened[-1][0] = {}
        opened.append([None, []])

    def text(self, data: str) -> None:
        self._open[-1][1].append(data)

    def end(self, name: str) -> None:
        children, pieces = self._open.pop()
        depth = len(self._open)
        if depth == 0:
            return  # </xml>: text directly inside the root is not a field
        text = "".join(pieces)
        if children is None:
            value: Any = text
        else:
            value = children
            if text.strip(_SPACE):
                children["#text"] = text
        if depth == 1:
            if name in self.fields:
                raise MalformedRequest(f"XML field {name} repeated")
            self.fields[name] = value
            return
        siblings = self._open[-1][0]
        held = siblings.get(name)
        if held is None:
            siblings[name] = value
        elif type(held) is list:  # noqa: E721 - values are otherwise str or dict
            held.append(value)
        else:
            siblings[name] = [held, value]


def _parse_xml(body: bytes) -> dict[str, Any]:
    """The root's children, nested ones as dicts.

    A DOCTYPE can only precede the root element, so only that prolog is searched for a fast
    refusal (a user's text may hold "<!DOCTYPE" in CDATA); expat then refuses any DOCTYPE or
    entity declaration it meets, so no entity is ever declared or fetched.
    """
    root = body.find(b"<xml")
    prolog = body if root < 0 else body[:root]
    if b"<!DOCTYPE" in prolog or b"<!ENTITY" in prolog:
        raise MalformedRequest("XML DOCTYPE/entities refused")
    reader = _Fields()
    parser = pyexpat.ParserCreate("utf-8")
    parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_declaration
    parser.EntityDeclHandler = _refuse_declaration
    parser.buffer_text = True
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.text
    try:
        parser.Parse(body, True)
    except pyexpat.ExpatError:
        raise MalformedRequest("body is not well-formed XML") from None
    return reader.fields


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
