"""PushBuilder: the POSTs WeChat sends to a message-push URL, in each of the six console settings.

Query (docs/protocol.md §2.1): ``signature``, ``timestamp``, ``nonce``; compatible and safe
mode add ``openid``, ``encrypt_type=aes`` and ``msg_signature`` (the plaintext example has none
of them). Body (§2.2): plaintext = the message; safe = ``ToUserName`` (original id) +
``Encrypt``; compatible = the plaintext fields + ``Encrypt``. Message fields follow the §3
samples' order.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from webhook.config.settings import FORMATS, MODES, AppConfig
from webhook.errors import BadSignature, MalformedRequest
from webhook.push.crypto import Cipher
from webhook.push.messages import ENTER_SESSION_EVENT, Message
from webhook.push.parsing import message_fields, parse_body, render
from webhook.push.signature import signature, verify

__all__ = ["PushBuilder", "BuiltPush", "DEFAULT_OPENID"]

DEFAULT_OPENID = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
_CONTENT_TYPES = {"xml": "text/xml", "json": "application/json"}


@dataclass(frozen=True, slots=True)
class BuiltPush:
    """One push: POST ``body`` to ``url(base)``. ``fields`` is the message in plain form."""

    query: dict[str, str]
    body: bytes
    content_type: str
    fields: dict[str, Any]

    def url(self, base: str) -> str:
        """``base`` (e.g. ``http://127.0.0.1:8000/wechat/wx123``) with this push's query."""
        return f"{base}{'&' if '?' in base else '?'}{urlencode(self.query)}"


class PushBuilder:
    """Builds pushes for one app as its console is configured (format x mode)."""

    def __init__(self, *, appid: str, token: str, encoding_aes_key: str | None = None,
                 format: str = "xml", mode: str = "safe", original_id: str = "gh_0123456789ab",
                 clock: Callable[[], float] = time.time,
                 random: _random.Random | None = None) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if mode != "plaintext" and not encoding_aes_key:
            raise ValueError(f"{mode} mode needs an encoding_aes_key")
        self.appid, self.token, self.format, self.mode = appid, token, format, mode
        self.original_id = original_id
        self._cipher = Cipher(encoding_aes_key, appid) if encoding_aes_key else None
        self._clock = clock
        self._random = random or _random.Random()

    @classmethod
    def for_app(cls, app: AppConfig, **kwargs: Any) -> PushBuilder:
        """A builder for a configured app (its token, current key, format and mode)."""
        return cls(appid=app.appid, token=app.token, encoding_aes_key=app.encoding_aes_key,
                   format=app.format, mode=app.mode, **kwargs)

    # --- building ------------------------------------------------------------------------------

    def build(self, message: Message | Mapping[str, Any]) -> BuiltPush:
        """The push carrying ``message`` (a Message, or wire fields used as given)."""
        fields = message_fields(message) if isinstance(message, Message) else dict(message)
        timestamp, nonce = str(int(self._clock())), self._nonce()
        query = {"signature": signature(self.token, timestamp, nonce),
                 "timestamp": timestamp, "nonce": nonce}
        plain = render(fields, self.format)
        cipher = self._cipher
        if self.mode == "plaintext" or cipher is None:   # a key is required otherwise
            body = plain
        else:
            encrypt = cipher.encrypt(plain.encode("utf-8"),
                                           random16=self._random.randbytes(16))
            envelope = ({"ToUserName": fields.get("ToUserName", self.original_id)}
                        if self.mode == "safe" else dict(fields))
            envelope["Encrypt"] = encrypt
            body = render(envelope, self.format)
            query.update(openid=str(fields.get("FromUserName", "")), encrypt_type="aes",
                         msg_signature=signature(self.token, timestamp, nonce, encrypt))
        return BuiltPush(query=query, body=body.encode("utf-8"),
                         content_type=_CONTENT_TYPES[self.format], fields=fields)

    def url_verification(self, echostr: str | None = None) -> dict[str, str]:
        """The console's GET query when the URL is saved (same in every mode)."""
        timestamp, nonce = str(int(self._clock())), self._nonce()
        echostr = echostr or str(self._random.randrange(10**18, 10**19))
        return {"signature": signature(self.token, timestamp, nonce), "echostr": echostr,
                "timestamp": timestamp, "nonce": nonce}

    def text(self, content: str, *, openid: str = DEFAULT_OPENID,
             msg_id: int | None = None) -> BuiltPush:
        return self.build({**self._head(openid, "text"), "Content": content,
                           "MsgId": msg_id or self._msg_id()})

    def image(self, media_id: str, *, openid: str = DEFAULT_OPENID, pic_url: str | None = None,
              msg_id: int | None = None) -> BuiltPush:
        pic_url = pic_url if pic_url is not None else f"http://mmbiz.qpic.cn/mmbiz_jpg/{media_id}/0"
        return self.build({**self._head(openid, "image"), "PicUrl": pic_url,
                           "MediaId": media_id, "MsgId": msg_id or self._msg_id()})

    def miniprogram_page(self, title: str, page_path: str, *, openid: str = DEFAULT_OPENID,
                         app_id: str | None = None, thumb_url: str = "",
                         thumb_media_id: str = "", msg_id: int | None = None) -> BuiltPush:
        return self.build({**self._head(openid, "miniprogrampage"),
                           "MsgId": msg_id or self._msg_id(), "Title": title,
                           "AppId": app_id or self.appid, "PagePath": page_path,
                           "ThumbUrl": thumb_url, "ThumbMediaId": thumb_media_id})

    def event(self, name: str, *, openid: str = DEFAULT_OPENID, **fields: str | int) -> BuiltPush:
        """Any event; ``fields`` are extra wire fields, e.g. ``debug_str="hello world"``."""
        return self.build({**self._head(openid, "event"), "Event": name, **fields})

    def enter_session(self, openid: str = DEFAULT_OPENID, session_from: str = "") -> BuiltPush:
        """``user_enter_tempsession``: the user opened the chat (opens a 1-minute window)."""
        return self.event(ENTER_SESSION_EVENT, openid=openid, SessionFrom=session_from)

    # --- checking answers ----------------------------------------------------------------------

    def open_reply(self, body: bytes, push: BuiltPush | None = None) -> dict[str, Any]:
        """The fields of a passive answer, checked as WeChat would: ``{}`` for ``success`` or
        an empty body; an encrypted envelope must carry a valid MsgSignature (and echo the
        push's nonce when ``push`` is given). Safe mode refuses a plaintext answer."""
        if body.strip() in (b"", b"success"):
            return {}
        fields = parse_body(body, self.format)
        if "Encrypt" not in fields:
            if self.mode == "safe":
                raise MalformedRequest("safe mode: a reply other than success must be encrypted")
            return fields
        if self._cipher is None:
            raise MalformedRequest("encrypted reply but no encoding_aes_key")
        encrypt, nonce = fields["Encrypt"], str(fields.get("Nonce", ""))
        verify(str(fields.get("MsgSignature", "")), self.token, str(fields.get("TimeStamp", "")),
               nonce, encrypt)
        if push is not None and nonce != push.query["nonce"]:
            raise BadSignature("reply Nonce does not echo the push's nonce")
        return parse_body(self._cipher.decrypt(encrypt), self.format)

    # --- helpers -------------------------------------------------------------------------------

    def _head(self, openid: str, msg_type: str) -> dict[str, Any]:
        return {"ToUserName": self.original_id, "FromUserName": openid,
                "CreateTime": int(self._clock()), "MsgType": msg_type}

    def _nonce(self) -> str:
        return str(self._random.randrange(10**8, 2**31))

    def _msg_id(self) -> int:
        # real MsgIds exceed 2**53 (docs/protocol.md §3): exercise exact 64-bit handling
        return self._random.randrange(2**60, 2**63)
