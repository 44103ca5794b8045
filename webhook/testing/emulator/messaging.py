"""Customer-service sending: ``custom/send`` and typing, with the windows of
docs/protocol.md §4.2-4.3.

A user message opens a window of 5 sends for 48 h; ``user_enter_tempsession`` opens one of 2
sends for 1 minute (each new trigger restarts its window with a fresh count). A send outside
every window answers 45015; inside one whose count is used up, 45047. When both windows are
open the one closing first is used. A window starts at the push's ``CreateTime`` (when the
user wrote), or at the emulator's time when that is missing or in the future.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from webhook.push.messages import ENTER_SESSION_EVENT
from webhook.testing.emulator.media import find_media
from webhook.testing.emulator.state import AppState, Fail, Request, UserState
from webhook.testing.emulator.tokens import authorize

if TYPE_CHECKING:
    from webhook.testing.emulator.core import Emulator

__all__ = ["learn_push", "send", "typing"]

MESSAGE_WINDOW, MESSAGE_QUOTA = 48 * 3600, 5
ENTER_WINDOW, ENTER_QUOTA = 60, 2
EXCHANGE_WINDOW = 30      # typing needs a message either way within the last 30 s
TYPING_SECONDS = 15

# msgtype -> (required string fields, the field holding a media_id or None)
_PAYLOADS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "text": (("content",), None),
    "image": (("media_id",), "media_id"),
    "link": (("title", "description", "url"), None),
    "miniprogrampage": (("title", "pagepath", "thumb_media_id"), "thumb_media_id"),
}


def learn_push(emu: Emulator, app: AppState, fields: Mapping[str, Any]) -> None:
    """WeChat received a push from the user: remember the openid, open the matching window."""
    openid, msg_type = fields.get("FromUserName"), fields.get("MsgType")
    if not isinstance(openid, str) or not openid or not isinstance(msg_type, str):
        raise ValueError("a push needs FromUserName and MsgType")
    user = app.users.setdefault(openid, UserState())
    at = emu.now()
    created = fields.get("CreateTime")
    if isinstance(created, str) and created.isdigit():
        created = int(created)
    if isinstance(created, int) and not isinstance(created, bool):
        at = min(at, created)
    user.exchange_at = max(user.exchange_at or at, at)
    if msg_type != "event":
        user.message_at, user.message_used = at, 0
    elif fields.get("Event") == ENTER_SESSION_EVENT:
        user.enter_at, user.enter_used = at, 0


def send(emu: Emulator, req: Request) -> dict[str, Any]:
    """POST /cgi-bin/message/custom/send {touser, msgtype, <msgtype>: {...}}"""
    app = authorize(emu, req)
    body = req.json()
    user = _user(app, body)
    _check_payload(emu, app, body)
    now = emu.now()
    _consume(user, now)
    user.exchange_at, user.typing_until = now, None     # sending cancels typing
    emu.sent_log.append((app.appid, body["touser"],
                         {k: v for k, v in body.items() if k != "touser"}))
    return {"errcode": 0, "errmsg": "ok"}


def typing(emu: Emulator, req: Request) -> dict[str, Any]:
    """POST /cgi-bin/message/custom/business/typing {touser, command: Typing|CancelTyping}"""
    app = authorize(emu, req)
    body = req.json()
    user = _user(app, body)
    command = body.get("command")
    now = emu.now()
    if command == "Typing":
        if user.exchange_at is None or now - user.exchange_at > EXCHANGE_WINDOW:
            raise Fail(45080)
        if user.typing_until is not None and now < user.typing_until:
            raise Fail(45081)
        user.typing_until = now + TYPING_SECONDS
    elif command == "CancelTyping":
        user.typing_until = None
    else:
        raise Fail(45072)
    return {"errcode": 0, "errmsg": "ok"}


def _user(app: AppState, body: Mapping[str, Any]) -> UserState:
    touser = body.get("touser")
    user = app.users.get(touser) if isinstance(touser, str) else None
    if user is None:
        raise Fail(40003)
    return user


def _check_payload(emu: Emulator, app: AppState, body: Mapping[str, Any]) -> None:
    kind = body.get("msgtype")
    if kind not in _PAYLOADS:
        raise Fail(40008)
    required, media_key = _PAYLOADS[kind]
    part = body.get(kind)
    if not isinstance(part, dict):
        raise Fail(47001, f"data format error: {kind} object missing")
    for key in required:
        value = part.get(key)
        if not isinstance(value, str) or (not value and key != "description"):
            raise Fail(47001, f"data format error: {kind}.{key} missing")
    if media_key and find_media(emu, app.appid, part[media_key]) is None:
        raise Fail(40007)


def _consume(user: UserState, now: float) -> None:
    windows: list[tuple[float, str, int]] = []   # (closes at, name, sends left)
    if user.enter_at is not None and now < user.enter_at + ENTER_WINDOW:
        windows.append((user.enter_at + ENTER_WINDOW, "enter", ENTER_QUOTA - user.enter_used))
    if user.message_at is not None and now < user.message_at + MESSAGE_WINDOW:
        windows.append((user.message_at + MESSAGE_WINDOW, "message",
                        MESSAGE_QUOTA - user.message_used))
    if not windows:
        raise Fail(45015)
    usable = sorted(w for w in windows if w[2] > 0)
    if not usable:
        raise Fail(45047)
    if usable[0][1] == "enter":
        user.enter_used += 1
    else:
        user.message_used += 1
