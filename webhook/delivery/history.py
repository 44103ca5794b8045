"""The conversation history the console shows, noted as pushes are handled and replies go out.

What a customer sent is noted from the recorded push (text, an image's media id, a mini
program card, entering the chat), what was sent back with its rule and delivery state; a
conversation is flagged as needing a human when a hand-off rule fired, no rule matched (the
fallback alone is no match), a handler failed or a reply went dead. Rule hits and the texts no
rule matched are counted per day. Everything is kept ``[server] history_days`` days (0: none,
and no customer text is counted), purged by a loop of the process that delivers. Noting is
never worth a lost reply: a store error here is logged, not raised.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from webhook.backoff import Loop
from webhook.logsafe import Repeats, shown
from webhook.push.messages import (EnterSessionEvent, Event, ImageMessage, Message,
                                   MiniProgramPageMessage, TextMessage)
from webhook.routing.matchers import fold
from webhook.routing.router import Route
from webhook.store import HistoryItem, HistoryNote, InboxEntry, OutboxRow, Store

__all__ = ["History", "describe", "reply_item", "HANDOFF", "UNMATCHED", "FAILED", "DEAD",
           "TALLY_DAYS", "day_of"]

log = logging.getLogger(__name__)

HANDOFF, UNMATCHED = "hand-off rule fired", "no rule matched"
FAILED, DEAD = "a handler failed", "a reply went dead"
TALLY_DAYS = 7          # rule hits and unmatched texts: the last 7 days, today included
UNMATCHED_CHARS = 60    # an unmatched text is counted by its first characters, folded
PURGE_EVERY = 600.0     # seconds between purges
MAX_PENDING = 20_000    # notes waiting to be written, at most


def day_of(at: float) -> int:
    """The UTC day (days since 1970) a tally of ``at`` counts in."""
    return int(at // 86400)


def describe(message: Message) -> dict[str, Any]:
    """What the customer sent, as the timeline shows it (images by media id: never copied)."""
    if isinstance(message, TextMessage):
        return {"type": "text", "text": message.content}
    if isinstance(message, ImageMessage):
        return {"type": "image", "media_id": message.media_id}
    if isinstance(message, MiniProgramPageMessage):
        return {"type": "miniprogrampage", "title": message.title, "app_id": message.app_id,
                "page_path": message.page_path, "thumb_media_id": message.thumb_media_id}
    if isinstance(message, EnterSessionEvent):
        return {"type": "enter", "session_from": message.session_from}
    if isinstance(message, Event):
        return {"type": "event", "event": message.event}
    return {"type": message.msg_type}


_STATES = {"sent": "sent", "dead": "dead", "sending": "sending"}


def reply_item(row: OutboxRow) -> HistoryItem:
    """A reply's line in the timeline, in its state now: queued, sending, retrying (a failed
    try, waiting for the next), sent or dead, with WeChat's errcode and errmsg."""
    state = _STATES.get(row.state) or ("retrying" if row.attempts else "queued")
    failed = state != "sent"   # a row keeps its last error after a later try went through
    return HistoryItem(item=f"reply:{row.id}", at=row.created_at, direction="out", body=row.body,
                       rule=row.rule, state=state, errcode=row.errcode if failed else None,
                       errmsg=row.errmsg if failed else None)


class History:
    """Notes for the console; ``days`` 0 keeps none.

    Started (``start``), it writes its notes from a thread of its own, all that gathered
    while the last write ran in one store write: the handlers and senders of a busy
    delivery process hand a note over and go on. Not started, a note is written at once.
    What is not yet written when the process dies is lost, like a note whose write failed.
    """

    def __init__(self, store: Store, *, days: int, clock: Callable[[], float] = time.time,
                 repeats: Repeats | None = None) -> None:
        self._store, self._keep, self._clock = store, days * 86400.0, clock
        self._repeats = repeats or Repeats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._notes: list[HistoryNote] = []
        self._tallies: Counter[tuple[str, int, str]] = Counter()
        self._pending = threading.Lock()
        self._due = threading.Event()        # notes wait to be written

    @property
    def enabled(self) -> bool:
        return self._keep > 0

    def _add(self, notes: Sequence[HistoryNote] = (),
             tallies: Sequence[tuple[str, int, str]] = ()) -> None:
        with self._pending:
            if len(self._notes) >= MAX_PENDING:   # the store has been failing a while
                self._repeats.log(log, logging.ERROR, "history full", "history note dropped: "
                                  "%d wait to be written", len(self._notes))
                return
            self._notes += notes
            self._tallies.update(tallies)
        if self._threads:
            self._due.set()
        else:
            self.write()

    def write(self) -> None:
        """Write the notes handed over so far."""
        with self._pending:
            notes, tallies = self._notes, self._tallies
            self._notes, self._tallies = [], Counter()
        if tallies:
            self._guarded("tally", lambda: self._store.tally_add(tallies))
        if notes:
            self._guarded("notes", lambda: self._store.history_add(notes))

    def _guarded(self, what: str, write: Callable[[], object]) -> None:
        try:
            write()
        except Exception as exc:   # the push and its replies stand; only the notes are lost
            self._repeats.log(log, logging.ERROR, f"history {what}", "history %s not noted: "
                              "%s: %s", what, type(exc).__name__, shown(exc, 200))

    def handled(self, entry: InboxEntry, message: Message, route: Route,
                rows: Sequence[OutboxRow], failures: Sequence[str] = ()) -> None:
        """A push was handled: ``route`` reached its rules (``failures`` among them raised)
        and queued ``rows``."""
        matched = [rule.name for rule, _ in route.steps]
        unmatched = not isinstance(message, Event) and all(
            rule.fallback for rule, _ in route.steps)
        day = day_of(entry.received_at)
        tallies = [("rule", day, name) for name in matched]
        if unmatched and self.enabled and isinstance(message, TextMessage):
            text = fold(message.content)[:UNMATCHED_CHARS]
            if text:
                tallies.append(("unmatched", day, text))
        if not self.enabled:
            self._add(tallies=tallies)
            return
        flag = FAILED if failures else HANDOFF if route.transfer else \
            UNMATCHED if unmatched else None
        body = json.dumps(describe(message), ensure_ascii=False)
        items = [HistoryItem(item=entry.key, at=entry.received_at, direction="in", body=body,
                             rule=",".join(matched)), *map(reply_item, rows)]
        self._add([HistoryNote(entry.appid, message.openid, items, preview=body, flag=flag)],
                  tallies)

    def queued(self, rows: Sequence[OutboxRow]) -> None:
        """Replies queued (or queued again) without a push: an operator's, a retry."""
        if self.enabled:
            self._add([HistoryNote(row.appid, row.openid, [reply_item(row)]) for row in rows])

    def reply(self, row: OutboxRow) -> None:
        """A send ended (sent, retrying or dead): note ``row`` in the state it was left in."""
        if self.enabled:
            self._add([HistoryNote(row.appid, row.openid, [reply_item(row)],
                                   flag=DEAD if row.state == "dead" else None)])

    # -- the threads: writes, purges ------------------------------------------------------
    def purge(self) -> float:
        """Forget what is older than kept; the seconds until the next purge."""
        now = self._clock()
        self._store.history_purge(before=now - self._keep)
        self._store.tally_purge(before=day_of(now) - TALLY_DAYS + 1)
        return PURGE_EVERY

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=target, name=name, daemon=True)
                         for target, name in ((self._writes, "wxpush-history"),
                                              (self._purges, "wxpush-history-purge"))]
        for thread in self._threads:
            thread.start()

    def _writes(self) -> None:
        while not self._stop.is_set():
            self._due.wait()
            self._due.clear()
            self.write()

    def _purges(self) -> None:
        Loop("history purge", self.purge, stop=self._stop, cap=PURGE_EVERY,
             repeats=self._repeats, logger=log).run()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads, then write what they left."""
        self._stop.set()
        self._due.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.write()

