"""The inbox side of delivery: record each push before answering, handle it after.

``Intake.accept`` runs on the request path: route (pure, microseconds) to learn whether the
answer is the passive hand-off, then record the push in the store under its dedupe key with
that answer, durably, and only then answer. A retry of the same push (WeChat delivers up to
4 times, sometimes while the first is still being handled) finds the row and gets the same
answer, and is not handled again.

Where the store journals pushes (SQLite), recording is one append of the decrypted payload,
and the retry is found when the background ingests the journal and keys each push
(``read_recorded``). Most pushes are then answered without being parsed at all:
``parsing.peek`` reads their MsgType and Content, and when ``Router.may_transfer`` rules out
a hand-off the answer is ``success``; only the rest are parsed and routed before answering.

``Handler.handle`` runs in the background, from the recorded row, so a crash after the answer
loses nothing: the row's lease runs out and another worker claims it. A push recorded with
``inbox_add`` is handed to its handler with the message and route the request path already
has; an ingested or reclaimed row is parsed and routed again from its stored copy. A push
whose handling keeps failing is set aside as dead with its error (``failure``), and so is
one logged that cannot be parsed (under ``unreadable_key``), to be seen and retried with
``wxpush inbox``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import traceback
from collections.abc import Callable
from functools import partial

from webhook.errors import RequestRejected
from webhook.logsafe import shown
from webhook.messages import EnterSessionEvent, Event, Message, TransferToHuman, hashed
from webhook.parsing import peek, read_message, transfer_fields
from webhook.quota import WINDOW_TTL, note_enter, note_message, quota_key
from webhook.receive import Push, seal
from webhook.routing import Route, Router
from webhook.settings import AppConfig
from webhook.store import InboxEntry, NewReply, Store, ValueUpdate

__all__ = ["Intake", "Handler", "inbox_key", "read_recorded", "unreadable_key", "failure",
           "log_duplicate"]

log = logging.getLogger(__name__)
SUCCESS = "success"


def inbox_key(appid: str, message: Message) -> str:
    return f"{appid}:{message.dedupe_key}"


class Intake:
    """Request path: route, record, answer. Never runs a handler."""

    def __init__(self, *, store: Store, router: Callable[[], Router], owner: str,
                 clock: Callable[[], float], rng: random.Random, dedupe_ttl: float,
                 lease: float, submit: Callable[[InboxEntry, Message, Route], None]) -> None:
        self._store, self._router, self._owner = store, router, owner
        self._clock, self._rng = clock, rng
        self._ttl, self._lease, self._submit = dedupe_ttl, lease, submit

    def accept(self, app: AppConfig, push: Push) -> str:
        """The HTTP body to answer: ``success`` or the sealed transfer_customer_service."""
        now = self._clock()
        router = self._router()
        if self._store.journaled:
            # One append; a retry is told apart, and never handled, when it is ingested. Its
            # answer is this one: routing is pure, so the same push gets the same answer.
            answer = SUCCESS
            peeked = peek(push.plaintext, push.format)
            if peeked is None or router.may_transfer(*peeked):
                answer = self._answer(app, push, router.route(push.message, appid=app.appid),
                                      now)
            self._store.inbox_log(app.appid, app.format, push.plaintext, answer, now)
            self._log_recorded(app, push)
            return answer
        message = push.message
        route = router.route(message, appid=app.appid)
        answer = self._answer(app, push, route, now)
        entry = InboxEntry(key=inbox_key(app.appid, message), appid=app.appid, format=app.format,
                           payload=push.plaintext.decode("utf-8"), answer=answer, received_at=now,
                           attempts=1)   # as recorded: leased to this process's handler
        existing = self._store.inbox_add(entry, owner=self._owner, lease=self._lease,
                                         ttl=self._ttl)
        if existing is not None:
            log_duplicate(existing)
            return existing.answer
        self._log_recorded(app, push)
        self._submit(entry, message, route)
        return answer

    def _answer(self, app: AppConfig, push: Push, route: Route, now: float) -> str:
        if not route.transfer:
            return SUCCESS
        fields = transfer_fields(push.message, now=int(now))
        return seal(app, push, fields, now=int(now), random16=self._rng.randbytes(16))

    @staticmethod
    def _log_recorded(app: AppConfig, push: Push) -> None:
        if log.isEnabledFor(logging.DEBUG):   # the arguments cost more than the call
            message = push.message
            log.debug("push recorded appid=%s key=%s type=%s user=%s", app.appid,
                      shown(message.dedupe_key),
                      shown(getattr(message, "event", message.msg_type)), hashed(message.openid))


def read_recorded(entry: InboxEntry) -> Message:
    """The message of a push logged without a key (``Store.inbox_ingest`` keys it with
    ``inbox_key``); MalformedRequest for one that cannot be read: it was answered, but no
    handler can take it."""
    return read_message(entry.payload.encode("utf-8"), entry.format)


def unreadable_key(entry: InboxEntry) -> str:
    """The key of a logged push that cannot be parsed, so that it can be set aside (and a
    retry of it, the same payload, found): its payload's digest."""
    digest = hashlib.sha256(entry.payload.encode("utf-8")).hexdigest()[:24]
    return f"{entry.appid}:unreadable-{digest}"


def failure(exc: BaseException) -> str:
    """Why a handling failed, to keep with the push: the error's type and our own reason,
    or where it was raised; never the exception's text, which may quote the message."""
    if isinstance(exc, RequestRejected):
        return f"{type(exc).__name__}: {shown(exc.reason)}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rpartition('/')[2]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"


def log_duplicate(existing: InboxEntry) -> None:
    """A delivery of a push already recorded (a WeChat retry): answered, not handled again."""
    log.info("push duplicate appid=%s key=%s state=%s", existing.appid,
             shown(existing.key.partition(":")[2]), existing.state)


class Handler:
    """Background: run the matched rules for one recorded push and queue their replies."""

    def __init__(self, *, store: Store, router: Callable[[], Router], owner: str,
                 clock: Callable[[], float], budget: float) -> None:
        self._store, self._router, self._owner = store, router, owner
        self._clock, self._budget = clock, budget

    def handle(self, entry: InboxEntry, message: Message | None = None,
               route: Route | None = None) -> int:
        """Handle ``entry`` (``message`` and ``route``: its payload, parsed and routed on the
        request path, if this process recorded it); returns how many replies were queued."""
        if message is None:
            message = read_recorded(entry)
        if route is None:
            route = self._router().route(message, appid=entry.appid)
        replies = route.run(message, appid=entry.appid, clock=self._clock, logger=log,
                            budget=self._budget)
        rule = ",".join(route.names)
        queued = [NewReply(appid=entry.appid, openid=message.openid, rule=rule,
                           body=json.dumps(r.payload(), ensure_ascii=False, separators=(",", ":")))
                  for r in replies if not isinstance(r, TransferToHuman)]
        rows = self._store.inbox_finish(entry.key, queued, owner=self._owner,
                                        also=_window_opened(entry.appid, message))
        log.debug("push handled appid=%s key=%s rules=%s replies=%d", entry.appid,
                 shown(message.dedupe_key), rule or "-", len(rows))
        return len(rows)


def _window_opened(appid: str, message: Message) -> ValueUpdate | None:
    """The send window this push opens (docs/protocol.md §4.2), noted with the handling."""
    at = float(message.create_time)
    if isinstance(message, EnterSessionEvent):
        note = partial(note_enter, at=at)
    elif isinstance(message, Event):
        return None
    else:
        note = partial(note_message, at=at, key=message.dedupe_key)
    return ValueUpdate(quota_key(appid, message.openid), note, ttl=WINDOW_TTL)
