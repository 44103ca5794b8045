"""The outbox side of delivery: send queued replies through WeChat, at least once.

Each claimed row is checked against the user's send window as recorded (no call WeChat
would refuse by that record; with none recorded, WeChat decides), sent with the shared
access_token, and marked sent; transient failures (-1, 45011, 5xx, timeouts) come back later
with exponential backoff and jitter, permanent ones (45015, 45047, 40003, 48001, ...) are
dead-lettered with their errcode and never retried. A row whose lease
ran out (its sender died) is claimed again by another sender: at-least-once, with a duplicate
only if a process dies between WeChat accepting the send and the row being marked.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from webhook.backoff import backoff
from webhook.delivery.history import History
from webhook.delivery.windows import WINDOW_TTL, take, verdict, window_key
from webhook.errors import Permanent, WeChatAPIError
from webhook.logsafe import shown
from webhook.metrics import DEAD_LETTERS, REPLIES_SENT, SENDS
from webhook.push.messages import hashed
from webhook.store import OutboxRow, Store, ValueUpdate

__all__ = ["Sender", "SendAPI"]

log = logging.getLogger(__name__)


class SendAPI(Protocol):
    def send(self, appid: str, openid: str, payload: dict) -> None: ...


class Sender:
    def __init__(self, *, store: Store, api: SendAPI, owner: str, clock: Callable[[], float],
                 rng: random.Random, lease: float, max_attempts: int,
                 base_delay: float = 1.0, max_delay: float = 300.0,
                 timer: Callable[[], float] = time.perf_counter,
                 history: History | None = None) -> None:
        self._store, self._api, self._owner, self._history = store, api, owner, history
        self._clock, self._rng, self._lease, self._timer = clock, rng, lease, timer
        self._max_attempts, self._base, self._max = max_attempts, base_delay, max_delay

    def run_once(self, limit: int = 16, progress: Callable[[], None] | None = None) -> int:
        """Claim up to ``limit`` due rows and deliver them (calling ``progress`` after each);
        how many were claimed."""
        rows = self._store.outbox_claim(owner=self._owner, lease=self._lease, limit=limit)
        for row in rows:
            self.deliver(row)
            if progress is not None:
                progress()
        return len(rows)

    def deliver(self, row: OutboxRow) -> str:
        """Send ``row`` and mark it; the outcome: "sent"; "refused" (for good: set aside);
        "busy" (WeChat answered with a passing error: the row is tried later, or set aside
        after its attempts, and the sender backs off); "failed" (our own error: the same,
        without backing off)."""
        window = window_key(row.appid, row.openid)
        refused = verdict(self._store.get(window), self._clock())
        if refused:
            self._store.outbox_dead(row.id, owner=self._owner, errcode=None, errmsg=refused)
            DEAD_LETTERS.labels(row.appid, "window").inc()
            self._log(row, "dead", 0.0, errmsg=refused)
            self._note(row, "dead", None, refused)
            return "refused"
        started = self._timer()
        try:
            self._api.send(row.appid, row.openid, json.loads(row.body))
        except Permanent as exc:
            SENDS.labels(row.appid, str(exc.errcode)).inc()
            self._store.outbox_dead(row.id, owner=self._owner, errcode=exc.errcode,
                                    errmsg=exc.errmsg)
            DEAD_LETTERS.labels(row.appid, str(exc.errcode)).inc()
            self._log(row, "dead", self._timer() - started, exc.errcode, exc.errmsg)
            self._note(row, "dead", exc.errcode, exc.errmsg)
            return "refused"
        except WeChatAPIError as exc:   # Retryable, or TokenInvalid after its one retry
            SENDS.labels(row.appid, str(exc.errcode)).inc()
            self._later(row, exc.errcode, exc.errmsg, self._timer() - started)
            return "busy"
        except Exception as exc:  # a bug or an unreadable local file: keep the row, retry
            log.exception("send failed unexpectedly id=%s", row.id)
            SENDS.labels(row.appid, "error").inc()
            self._later(row, None, f"{type(exc).__name__}", self._timer() - started)
            return "failed"
        else:
            SENDS.labels(row.appid, "0").inc()
            self._store.outbox_sent(row.id, owner=self._owner, also=ValueUpdate(
                window, lambda old: take(old, self._clock()), ttl=WINDOW_TTL))
            REPLIES_SENT.labels(row.appid).inc()
            self._log(row, "sent", self._timer() - started)
            self._note(row, "sent", row.errcode, row.errmsg)
            return "sent"

    def _later(self, row: OutboxRow, errcode: int | None, errmsg: str, spent: float) -> None:
        attempts = row.attempts + 1
        if attempts >= self._max_attempts:
            self._store.outbox_dead(row.id, owner=self._owner, errcode=errcode, errmsg=errmsg)
            DEAD_LETTERS.labels(row.appid, "attempts").inc()
            self._log(row, "dead", spent, errcode, f"{errmsg} (after {attempts} attempts)")
            self._note(row, "dead", errcode, errmsg)
            return
        delay = backoff(row.attempts, base=self._base, cap=self._max, rng=self._rng)
        self._store.outbox_retry(row.id, owner=self._owner, next_at=self._clock() + delay,
                                 errcode=errcode, errmsg=errmsg)
        self._log(row, "retry", spent, errcode, f"{errmsg} (again in {delay:.1f} s)")
        self._note(row, "pending", errcode, errmsg)

    def _note(self, row: OutboxRow, state: str, errcode: int | None,
              errmsg: str | None) -> None:
        """The history's note of a send that ended: the row as its mark left it (a try
        that failed counts as an attempt)."""
        if self._history is not None:
            self._history.reply(replace(
                row, state=state, attempts=row.attempts + (state != "sent"),
                errcode=errcode, errmsg=errmsg))

    def _log(self, row: OutboxRow, outcome: str, spent: float, errcode: int | None = None,
             errmsg: str = "") -> None:
        """One line a send: a reply set aside for good is a WARNING with WeChat's errmsg."""
        error = f" errcode={errcode} errmsg={shown(errmsg, 200)}" if errmsg else ""
        log.log(logging.WARNING if outcome == "dead" else logging.INFO,
                "reply %s id=%s appid=%s user=%s rule=%s latency=%.3fs age=%.1fs%s", outcome,
                row.id, row.appid, hashed(row.openid), row.rule or "-", spent,
                max(0.0, self._clock() - row.created_at), error)
