"""What became of the replies to one push, for ``wxpush push``: followed in the store the
config names (the outbox rows queued for the customer after the push: sent, or dead with
WeChat's errcode) or, without a config, at the emulator (its custom/send calls for the
customer). Either is asked again until every reply is settled or the time is up."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from webhook.cli.outbox import reply_text
from webhook.errors import Permanent, api_error
from webhook.store import Store
from webhook.testing.remote import EmulatorControl

__all__ = ["Fate", "StoreReplies", "EmulatorReplies", "follow"]

SEND = "/cgi-bin/message/custom/send"
ROWS = 1000          # newest outbox rows searched for the customer's


@dataclass(frozen=True, slots=True)
class Fate:
    """One reply as last seen: ``state`` is the outbox's (pending, sending, sent, dead)."""

    name: str
    state: str
    errcode: int | None = None
    errmsg: str | None = None
    text: str = ""

    @property
    def settled(self) -> bool:
        return self.state in ("sent", "dead")


class StoreReplies:
    """The customer's outbox rows that were not there when this was made."""

    def __init__(self, store: Store, appid: str, openid: str) -> None:
        self._store, self._appid, self._openid = store, appid, openid
        self._before = {row.id for row in self._rows()}

    def _rows(self) -> list:
        return [row for row in self._store.outbox_list(limit=ROWS)
                if row.appid == self._appid and row.openid == self._openid]

    def __call__(self) -> list[Fate]:
        return [Fate(f"reply {row.id}", row.state, row.errcode, row.errmsg, reply_text(row.body))
                for row in reversed(self._rows()) if row.id not in self._before]


class EmulatorReplies:
    """The emulator's custom/send calls to the customer made after this was made: a call
    WeChat answered with a permanent errcode is a dead reply, any other error one the server
    will try again."""

    def __init__(self, emulator: EmulatorControl, appid: str, openid: str) -> None:
        self._emulator, self._appid, self._openid = emulator, appid, openid
        self._before = len(self._calls())

    def _calls(self) -> list:
        return self._emulator.calls(SEND, appid=self._appid)

    def __call__(self) -> list[Fate]:
        fates = []
        for n, call in enumerate(self._calls()[self._before:], start=1):
            body = call.body if isinstance(call.body, dict) else {}
            if body.get("touser") != self._openid:
                continue
            if call.errcode == 0:
                state = "sent"
            else:
                final = call.errcode is not None and isinstance(api_error(call.errcode, ""),
                                                                Permanent)
                state = "dead" if final else "pending"
            fates.append(Fate(f"send {n}", state, call.errcode or None, None,
                              reply_text(_without(body, "touser"))))
        return fates


def _without(body: dict, key: str) -> str:
    return json.dumps({k: v for k, v in body.items() if k != key}, ensure_ascii=False)


def follow(replies: Callable[[], list[Fate]], *, wait: float, settle: float = 0.5,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> list[Fate]:
    """Ask ``replies`` until there is at least one and all are settled, unchanged for
    ``settle`` seconds (a push's further replies follow its first), or ``wait`` seconds
    have passed: what was seen last."""
    deadline = clock() + wait
    seen: list[Fate] = []
    since = clock()
    while True:
        now = replies()
        if now != seen:
            seen, since = now, clock()
        if seen and all(f.settled for f in seen) and clock() - since >= settle:
            return seen
        if clock() >= deadline:
            return seen
        sleep(0.1)
