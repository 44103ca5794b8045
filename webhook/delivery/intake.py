"""Recording a push on the request path, before the answer.

``Intake.accept`` routes the push (pure, microseconds) to learn whether the answer is the
passive hand-off, then records it in the store under its dedupe key with that answer,
durably, and only then answers. A retry of the same push (WeChat delivers up to 4 times,
sometimes while the first is still being handled) finds the record, gets the same answer and
is not handled again.

Where the store journals pushes (SQLite), recording is one append of the decrypted payload,
and the retry is found when the background ingests the journal and keys each push
(``delivery.handling.read_recorded``). Most pushes are then answered without being parsed at
all: ``parsing.peek`` reads their MsgType and Content, and when ``Router.may_transfer`` rules
out a hand-off the answer is ``success``; only the rest are parsed and routed before answering.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from webhook.config.settings import AppConfig
from webhook.logsafe import shown
from webhook.metrics import DUPLICATES, PUSHES, msgtype
from webhook.push.messages import Message, hashed
from webhook.push.parsing import peek, transfer_fields
from webhook.push.receive import Push, seal
from webhook.routing.router import Route, Router
from webhook.store import InboxEntry, Store

__all__ = ["Intake", "inbox_key", "log_duplicate", "SUCCESS"]

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
            # A retry is only told apart when it is ingested: it counts as accepted here.
            PUSHES.labels(app.appid, msgtype(peeked[0] if peeked else push.message.msg_type),
                          "accepted").inc()
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
            PUSHES.labels(app.appid, msgtype(message.msg_type), "duplicate").inc()
            return existing.answer
        PUSHES.labels(app.appid, msgtype(message.msg_type), "accepted").inc()
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


def log_duplicate(existing: InboxEntry) -> None:
    """A delivery of a push already recorded (a WeChat retry): answered, not handled again."""
    DUPLICATES.labels(existing.appid).inc()
    log.info("push duplicate appid=%s key=%s state=%s", existing.appid,
             shown(existing.key.partition(":")[2]), existing.state)
