"""Recording a push on the request path, before the answer.

``Intake.accept`` routes the push (pure, microseconds) to learn whether the answer is the
passive hand-off, then records it in the store under its dedupe key with that answer,
durably, and only then answers. A retry of the same push (WeChat delivers up to 4 times,
sometimes while the first is still being handled) gets the answer the first delivery got and
is not handled again. The handling is the delivery process's (``delivery.background``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from webhook.config.settings import AppConfig
from webhook.logsafe import shown
from webhook.metrics import PUSHES, msgtype
from webhook.push.messages import hashed
from webhook.push.parsing import transfer_fields
from webhook.push.receive import Push, seal
from webhook.routing.router import Router
from webhook.store import InboxEntry, Store

__all__ = ["Intake", "SUCCESS"]

log = logging.getLogger(__name__)
SUCCESS = "success"


class Intake:
    """Request path: route, record, answer. Never runs a handler."""

    def __init__(self, *, store: Store, router: Callable[[], Router],
                 clock: Callable[[], float], rng: random.Random, dedupe_ttl: float) -> None:
        self._store, self._router = store, router
        self._clock, self._rng, self._ttl = clock, rng, dedupe_ttl

    def accept(self, app: AppConfig, push: Push) -> str:
        """The HTTP body to answer: ``success`` or the sealed transfer_customer_service."""
        now = self._clock()
        message = push.message
        answer = SUCCESS
        if self._router().route(message, appid=app.appid).transfer:
            answer = seal(app, push, transfer_fields(message, now=int(now)), now=int(now),
                          random16=self._rng.randbytes(16))
        entry = InboxEntry(key=f"{app.appid}:{message.dedupe_key}", appid=app.appid,
                           format=app.format, payload=push.plaintext.decode("utf-8"),
                           answer=answer, received_at=now)
        first = self._store.inbox_record(entry, ttl=self._ttl)
        PUSHES.labels(app.appid, msgtype(message.msg_type),
                      "accepted" if first is None else "duplicate").inc()
        if first is not None:
            return first
        if log.isEnabledFor(logging.DEBUG):   # the arguments cost more than the call
            log.debug("push recorded appid=%s key=%s type=%s user=%s", app.appid,
                      shown(message.dedupe_key),
                      shown(getattr(message, "event", message.msg_type)), hashed(message.openid))
        return answer
