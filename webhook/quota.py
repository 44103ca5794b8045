"""WeChat's customer-service send windows, tracked per user from the pushes we received.

docs/protocol.md §4.2 (current Mini Program send page): a user message opens 48 hours in which 5
messages may be sent; entering the chat (``user_enter_tempsession``) opens 1 minute with 2.
A later user message starts a fresh window. WeChat answers 45015 outside every window and
45047 once the count is used up; wxpush refuses such a reply itself, without a call.

The state is a small JSON text kept in the store and changed with ``Store.update``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["Windows", "MESSAGE_WINDOW", "ENTER_WINDOW", "note_message", "note_enter", "verdict",
           "take", "quota_key", "WINDOW_TTL"]

MESSAGE_WINDOW = (48 * 3600, 5)   # seconds, messages
ENTER_WINDOW = (60, 2)
WINDOW_TTL = MESSAGE_WINDOW[0] + 3600   # how long a user's window state is worth keeping


@dataclass(frozen=True, slots=True)
class Windows:
    msg_at: float = 0.0
    msg_sent: int = 0
    enter_at: float = 0.0
    enter_sent: int = 0

    @classmethod
    def load(cls, text: str | None) -> Windows:
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps({"msg_at": self.msg_at, "msg_sent": self.msg_sent,
                           "enter_at": self.enter_at, "enter_sent": self.enter_sent},
                          separators=(",", ":"))


def quota_key(appid: str, openid: str) -> str:
    return f"quota:{appid}:{openid}"


def note_message(text: str | None, at: float) -> str:
    """A user message at ``at`` (its CreateTime) opens a fresh 48 h window."""
    w = Windows.load(text)
    if at > w.msg_at:
        w = Windows(at, 0, w.enter_at, w.enter_sent)
    return w.dump()


def note_enter(text: str | None, at: float) -> str:
    """Entering the chat at ``at`` opens a fresh 1-minute window."""
    w = Windows.load(text)
    if at > w.enter_at:
        w = Windows(w.msg_at, w.msg_sent, at, 0)
    return w.dump()


def verdict(text: str | None, now: float) -> str | None:
    """None if a message may be sent now, else why not (what WeChat would answer)."""
    w = Windows.load(text)
    msg_open = w.msg_at > 0 and now < w.msg_at + MESSAGE_WINDOW[0]
    enter_open = w.enter_at > 0 and now < w.enter_at + ENTER_WINDOW[0]
    if msg_open and w.msg_sent < MESSAGE_WINDOW[1]:
        return None
    if enter_open and w.enter_sent < ENTER_WINDOW[1]:
        return None
    if msg_open or enter_open:
        return "quota: the window's message count is used up (WeChat would answer 45047)"
    return "quota: no open window for this user (WeChat would answer 45015)"


def take(text: str | None, now: float) -> str:
    """Count one sent message against the window that allowed it."""
    w = Windows.load(text)
    if w.msg_at > 0 and now < w.msg_at + MESSAGE_WINDOW[0] and w.msg_sent < MESSAGE_WINDOW[1]:
        return Windows(w.msg_at, w.msg_sent + 1, w.enter_at, w.enter_sent).dump()
    return Windows(w.msg_at, w.msg_sent, w.enter_at, w.enter_sent + 1).dump()
