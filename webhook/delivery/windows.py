"""WeChat's customer-service send windows, tracked per user from the pushes we handled.

docs/protocol.md §4.2 (current Mini Program send page): a user message opens 48 hours in which 5
messages may be sent; entering the chat (``user_enter_tempsession``) opens 1 minute with 2.
Every user message starts a fresh window, also one written in the same second as the last
(the same CreateTime): messages are told apart by their dedupe key (MsgId). WeChat answers
45015 outside every window and 45047 once the count is used up.

wxpush refuses a reply itself, without a call, only when the windows it recorded say WeChat
would: with nothing recorded for the user (the state expired, or the store is new) it sends
and lets WeChat's answer decide. A sent message counts against the open window that closes
first, as the emulator does (the other reading would refuse sends WeChat may allow).

The state is a small JSON text kept in the store and changed with ``Store.update``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["Windows", "open_windows", "MESSAGE_WINDOW", "ENTER_WINDOW", "note_message", "note_enter", "verdict",
           "take", "window_key", "WINDOW_TTL", "SAME_SECOND_KEYS"]

MESSAGE_WINDOW = (48 * 3600, 5)   # seconds, messages
ENTER_WINDOW = (60, 2)
WINDOW_TTL = MESSAGE_WINDOW[0] + 3600   # how long a user's window state is worth keeping
# Messages of the latest second remembered, so that noting one twice (a handling run again
# after its lease ran out) does not reopen the window twice.
SAME_SECOND_KEYS = 16


@dataclass(frozen=True, slots=True)
class Windows:
    msg_at: float = 0.0
    msg_sent: int = 0
    enter_at: float = 0.0
    enter_sent: int = 0
    msg_keys: tuple[str, ...] = ()    # the messages noted with CreateTime == msg_at

    @classmethod
    def load(cls, text: str | None) -> Windows:
        if not text:
            return cls()
        fields = json.loads(text)
        return cls(**{**fields, "msg_keys": tuple(fields.get("msg_keys", ()))})

    def dump(self) -> str:
        return json.dumps({"msg_at": self.msg_at, "msg_sent": self.msg_sent,
                           "enter_at": self.enter_at, "enter_sent": self.enter_sent,
                           "msg_keys": list(self.msg_keys)}, separators=(",", ":"))

    def _open(self, now: float) -> list[tuple[float, str, int]]:
        """The open windows as (closes at, name, messages left), the one closing first first."""
        windows = []
        if self.msg_at > 0 and now < self.msg_at + MESSAGE_WINDOW[0]:
            windows.append((self.msg_at + MESSAGE_WINDOW[0], "msg",
                            MESSAGE_WINDOW[1] - self.msg_sent))
        if self.enter_at > 0 and now < self.enter_at + ENTER_WINDOW[0]:
            windows.append((self.enter_at + ENTER_WINDOW[0], "enter",
                            ENTER_WINDOW[1] - self.enter_sent))
        return sorted(windows)


def window_key(appid: str, openid: str) -> str:
    return f"quota:{appid}:{openid}"


def note_message(text: str | None, at: float, key: str) -> str:
    """A user message ``key`` written at ``at`` (its CreateTime) opens a fresh 48 h window,
    unless a later one already did or this one was noted before."""
    w = Windows.load(text)
    if at > w.msg_at:
        w = Windows(at, 0, w.enter_at, w.enter_sent, (key,))
    elif at == w.msg_at and key not in w.msg_keys:
        w = Windows(at, 0, w.enter_at, w.enter_sent, (*w.msg_keys, key)[-SAME_SECOND_KEYS:])
    return w.dump()


def note_enter(text: str | None, at: float) -> str:
    """Entering the chat at ``at`` opens a fresh 1-minute window."""
    w = Windows.load(text)
    if at > w.enter_at:
        w = Windows(w.msg_at, w.msg_sent, at, 0, w.msg_keys)
    return w.dump()


def open_windows(text: str | None, now: float) -> list[tuple[float, str, int]] | None:
    """The windows recorded as open now, as (closes at, "msg" or "enter", messages left), the
    one closing first first; None while nothing is recorded (WeChat decides)."""
    return Windows.load(text)._open(now) if text else None


def verdict(text: str | None, now: float) -> str | None:
    """None if a message may be sent now (or nothing is recorded: WeChat decides), else why
    not (what WeChat would answer)."""
    if not text:
        return None
    windows = Windows.load(text)._open(now)
    if any(left > 0 for _, _, left in windows):
        return None
    if windows:
        return "quota: the window's message count is used up (WeChat would answer 45047)"
    return "quota: no open window for this user (WeChat would answer 45015)"


def take(text: str | None, now: float) -> str | None:
    """Count one sent message against the open window with messages left that closes first
    (None while nothing is recorded: a send WeChat took tells nothing of its windows)."""
    if not text:
        return None
    w = Windows.load(text)
    usable = [name for _, name, left in w._open(now) if left > 0]
    if usable and usable[0] == "enter":
        return Windows(w.msg_at, w.msg_sent, w.enter_at, w.enter_sent + 1, w.msg_keys).dump()
    if usable:
        return Windows(w.msg_at, w.msg_sent + 1, w.enter_at, w.enter_sent, w.msg_keys).dump()
    return w.dump()
