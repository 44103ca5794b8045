"""Handling a recorded push after the answer: run its rules, queue their replies.

``Responder.respond`` runs in the delivery process, from the recorded entry (parsed and
routed again from its payload), so a crash after the answer loses nothing: the entry's lease
runs out and it is taken again. A push whose handling keeps failing is set aside as dead with
its error (``failure``), to be seen and retried with ``wxpush inbox``.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from functools import partial

from webhook.delivery.history import History
from webhook.delivery.pushapi import PushAPI
from webhook.delivery.windows import WINDOW_TTL, note_enter, note_message, window_key
from webhook.errors import RequestRejected
from webhook.logsafe import shown
from webhook.metrics import HANDLER_SECONDS
from webhook.push.messages import EnterSessionEvent, Event, Message, TransferToHuman, hashed
from webhook.push.parsing import read_message
from webhook.routing.handlerapi import OFFLINE
from webhook.routing.router import Route, Router
from webhook.store import InboxEntry, NewReply, Store, ValueUpdate
from webhook.wechat.api import WeChatAPI

__all__ = ["Responder", "failure"]

log = logging.getLogger(__name__)


def failure(exc: BaseException) -> str:
    """Why a handling failed, to keep with the push: the error's type and our own reason,
    or where it was raised; never the exception's text, which may quote the message."""
    if isinstance(exc, RequestRejected):
        return f"{type(exc).__name__}: {shown(exc.reason)}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rpartition('/')[2]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"


class Responder:
    """Background: run the matched rules for one recorded push and queue their replies
    (``api``: the handlers' ``ctx.wechat``, through a ``PushAPI``; none without it)."""

    def __init__(self, *, store: Store, router: Callable[[], Router], owner: str,
                 clock: Callable[[], float], budget: float, api: WeChatAPI | None = None,
                 log_content: bool = False, timer: Callable[[], float] = time.perf_counter,
                 history: History | None = None) -> None:
        self._store, self._router, self._owner = store, router, owner
        self._clock, self._budget, self._timer = clock, budget, timer
        self._api, self._log_content, self._history = api, log_content, history

    def respond(self, entry: InboxEntry) -> int:
        """Handle ``entry``; how many replies were queued. MalformedRequest for a payload
        that does not read (it read when it was recorded: no use trying again)."""
        started = self._timer()
        message = read_message(entry.payload.encode("utf-8"), entry.format)
        router = self._router()
        route = router.route(message, appid=entry.appid)
        failed: list[str] = []

        def observe(rule: str, seconds: float, error: Exception | None) -> None:
            HANDLER_SECONDS.labels(rule).observe(seconds)
            if error is not None:
                failed.append(rule)

        wechat = None if self._api is None else \
            PushAPI(self._api, appid=entry.appid, openid=message.openid)
        replies = route.run(message, appid=entry.appid, clock=self._clock, logger=log,
                            budget=self._budget, observe=observe, reveal=self._log_content,
                            rescue=lambda: router.rescue(message, appid=entry.appid),
                            wechat=wechat or OFFLINE)
        rule = ",".join(route.names)
        sends = (wechat.queued if wechat else []) + \
            [(message.openid, r) for r in replies if not isinstance(r, TransferToHuman)]
        queued = [NewReply(appid=entry.appid, openid=openid, rule=rule,
                           body=json.dumps(r.payload(), ensure_ascii=False, separators=(",", ":")))
                  for openid, r in sends]
        rows = self._store.inbox_finish(entry.key, queued, owner=self._owner,
                                        also=_window_opened(entry.appid, message))
        if self._history is not None:
            self._history.handled(entry, message, route, rows, failed)
        self._log(entry, message, route, failed, len(rows), self._timer() - started)
        return len(rows)

    def _log(self, entry: InboxEntry, message: Message, route: Route, failed: list[str],
             replies: int, spent: float) -> None:
        """One line a push: who (hashed), which key, which rules, what came of it."""
        outcome = ("failed" if failed else "transfer" if route.transfer
                   else "handled" if route else "no_rule")
        content = getattr(message, "content", None)
        shown_content = f" content={shown(content, 500)}" \
            if self._log_content and isinstance(content, str) else ""
        log.info("push handled appid=%s user=%s key=%s type=%s rule=%s outcome=%s replies=%d "
                 "latency=%.3fs age=%.1fs%s", entry.appid, hashed(message.openid),
                 shown(message.dedupe_key), shown(getattr(message, "event", message.msg_type)),
                 ",".join(route.names) or "-", outcome, replies, spent,
                 max(0.0, self._clock() - entry.received_at), shown_content)


def _window_opened(appid: str, message: Message) -> ValueUpdate | None:
    """The send window this push opens (docs/protocol.md §4.2), noted with the handling."""
    at = float(message.create_time)
    if isinstance(message, EnterSessionEvent):
        note = partial(note_enter, at=at)
    elif isinstance(message, Event):
        return None
    else:
        note = partial(note_message, at=at, key=message.dedupe_key)
    return ValueUpdate(window_key(appid, message.openid), note, ttl=WINDOW_TTL)
