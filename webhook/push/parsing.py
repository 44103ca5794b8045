"""Pure parsing: body bytes -> fields (XML via xmltodict, or JSON) -> typed Message, and back.

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

import xmltodict

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
    """The root's children, nested ones as dicts.

    A DOCTYPE can only precede the root element, so only that prolog is searched for a fast
    refusal (a user's text may hold "<!DOCTYPE" in CDATA); expat then refuses any DOCTYPE it
    meets, so no entity is ever declared.
    """
    root = body.find(b"<xml")
    prolog = body if root < 0 else body[:root]
    if b"<!DOCTYPE" in prolog or b"<!ENTITY" in prolog:
        raise MalformedRequest("XML DOCTYPE/entities refused")
    fields: dict[str, Any] = {}

    def field(path: list[tuple[str, Any]], value: Any) -> bool:
        # Called by xmltodict for each child of the root, as it ends (streaming them spares
        # building the whole tree).
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
