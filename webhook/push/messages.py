"""Typed, immutable messages: what a customer sent (inbound) and what we answer (replies).

Inbound fields follow docs/protocol.md §3 (the same keys in XML and JSON). Values are normalised
so that the XML and the JSON form of one push give equal objects: ``MsgId`` keeps its exact
64-bit value as an int (or stays a string on the cloud-function path), ``CreateTime`` is an
int, and unknown fields are kept as text in ``extra``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Message", "TextMessage", "ImageMessage", "MiniProgramPageMessage", "Event",
           "EnterSessionEvent", "UnknownMessage", "ENTER_SESSION_EVENT", "Reply", "TextReply",
           "ImageReply", "LinkReply", "MiniProgramPageReply", "TransferToHuman", "hashed"]

ENTER_SESSION_EVENT = "user_enter_tempsession"


# --- inbound -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Fields common to every push. ``extra`` holds fields we do not model, as (key, text)."""

    to_user: str
    from_user: str
    create_time: int
    msg_type: str
    msg_id: int | str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def openid(self) -> str:
        """The customer's openid (``FromUserName``)."""
        return self.from_user

    @property
    def dedupe_key(self) -> str:
        """What identifies one push across WeChat's retries (docs/protocol.md §4.1).

        Messages carry ``MsgId``; events do not, so they are keyed by sender, time and event.
        """
        if self.msg_id is not None:
            return f"msg:{self.msg_id}"
        return f"evt:{self.from_user}:{self.create_time}:{getattr(self, 'event', self.msg_type)}"

    def get(self, name: str, default: str | None = None) -> str | None:
        """An unmodelled field by its wire name, e.g. ``msg.get("debug_str")``."""
        for key, value in self.extra:
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True, kw_only=True)
class TextMessage(Message):
    msg_type: str = "text"
    content: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageMessage(Message):
    msg_type: str = "image"
    pic_url: str = ""
    media_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MiniProgramPageMessage(Message):
    msg_type: str = "miniprogrampage"
    title: str = ""
    app_id: str = ""
    page_path: str = ""
    thumb_url: str = ""
    thumb_media_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(Message):
    """Any ``MsgType=event`` push; ``event`` is the ``Event`` field as sent."""

    msg_type: str = "event"
    event: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnterSessionEvent(Event):
    """``user_enter_tempsession``: the user opened the chat; ``session_from`` is the button's
    ``session-from`` attribute. It opens a 1-minute window of 2 messages
    (docs/protocol.md §4.2)."""

    event: str = ENTER_SESSION_EVENT
    session_from: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownMessage(Message):
    """A ``MsgType`` we do not model; still acknowledged, routed only to rules that ask."""


def hashed(openid: str) -> str:
    """An openid as log lines show it: enough to correlate lines, not to identify anyone."""
    return hashlib.sha256(openid.encode()).hexdigest()[:12]


# --- replies -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reply:
    """Something to answer. ``payload()`` is the customer-service send body minus ``touser``."""

    msgtype: ClassVar[str] = ""

    def payload(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class TextReply(Reply):
    content: str
    msgtype: ClassVar[str] = "text"

    def payload(self) -> dict[str, Any]:
        return {"msgtype": "text", "text": {"content": self.content}}


@dataclass(frozen=True, slots=True)
class ImageReply(Reply):
    """An image by ``media_id``, or a local file (``path``) that the sender uploads once and
    reuses for the media_id's 3-day lifetime."""

    media_id: str | None = None
    path: str | None = None
    msgtype: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        if (self.media_id is None) == (self.path is None):
            raise ValueError("ImageReply needs exactly one of media_id or path")

    def payload(self) -> dict[str, Any]:
        image = {"media_id": self.media_id} if self.media_id else {"path": self.path}
        return {"msgtype": "image", "image": image}


@dataclass(frozen=True, slots=True)
class LinkReply(Reply):
    title: str
    description: str
    url: str
    thumb_url: str = ""
    msgtype: ClassVar[str] = "link"

    def payload(self) -> dict[str, Any]:
        return {"msgtype": "link", "link": {"title": self.title, "description": self.description,
                                            "url": self.url, "thumb_url": self.thumb_url}}


@dataclass(frozen=True, slots=True)
class MiniProgramPageReply(Reply):
    """A mini program card; the thumbnail is a media_id or a local image file to upload."""

    title: str
    pagepath: str
    thumb_media_id: str | None = None
    thumb_path: str | None = None
    msgtype: ClassVar[str] = "miniprogrampage"

    def __post_init__(self) -> None:
        if (self.thumb_media_id is None) == (self.thumb_path is None):
            raise ValueError("MiniProgramPageReply needs exactly one of thumb_media_id or thumb_path")

    def payload(self) -> dict[str, Any]:
        card: dict[str, Any] = {"title": self.title, "pagepath": self.pagepath}
        if self.thumb_media_id:
            card["thumb_media_id"] = self.thumb_media_id
        else:
            card["thumb_path"] = self.thumb_path
        return {"msgtype": "miniprogrampage", "miniprogrampage": card}


@dataclass(frozen=True, slots=True)
class TransferToHuman(Reply):
    """Hand the conversation to the web customer-service tool.

    The only passive reply Mini Programs document (docs/protocol.md §4.4): it travels in the HTTP
    answer to the push (encrypted in compatible/safe mode), never through custom/send.
    """

    msgtype: ClassVar[str] = "transfer_customer_service"

    def payload(self) -> dict[str, Any]:
        return {"msgtype": self.msgtype}
