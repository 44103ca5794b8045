"""``GET /readyz``: whether this server can take pushes and get replies out, check by check.

``/healthz`` says the process is up; this says what a load balancer or an operator wants to
know before sending traffic: the store answers (and, on Redis, keeps what it is told), the
rules are loaded, the delivery process goes round its loops, nothing has waited too long in
the queues and not too much was set aside. The checks are run at most once per ``cache``
seconds in each worker (a probe every second costs the store a few indexed reads), and each
is a function a page can call too (``Readiness.checks``). No answer names a secret.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import falcon

from webhook.delivery.heartbeat import BeatFile
from webhook.errors import StoreError
from webhook.routing.live import LiveRouter
from webhook.store import Backlog, Store

__all__ = ["Check", "Readiness", "ReadyResource", "delivery_by_file"]

CACHE = 1.0   # seconds a worker keeps its last answer


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


DeliveryCheck = Callable[[], Check]


def delivery_by_file(beats: BeatFile, stall: float) -> DeliveryCheck:
    """The delivery process of ``wxpush serve``: its last sign, as its supervisor noted it.
    Silent for half of ``stall_timeout``: not ready, before the supervisor steps in."""
    def check() -> Check:
        last = beats.last()
        if last is None:
            return Check("delivery", False, "delivery process: no progress yet")
        pid, silent = last
        ok = silent <= stall / 2
        return Check("delivery", ok, f"delivery pid {pid}: last progress {silent:.0f} s ago"
                     + ("" if ok else f" (over {stall / 2:g} s: half of stall_timeout)"))
    return check


class Readiness:
    """The checks of one server process. ``backlog_age``: seconds the oldest waiting push or
    reply may have waited; ``dead_letters``: how many set-aside pushes and replies are too
    many (0 turns either off). ``delivery``: None where another host's ``wxpush deliver``
    handles the pushes and nothing here watches it."""

    def __init__(self, *, store: Store, rules: LiveRouter | None, delivery: DeliveryCheck | None,
                 backlog_age: float, dead_letters: int, allow_volatile: bool,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, cache: float = CACHE) -> None:
        self._store, self._rules, self._delivery = store, rules, delivery
        self._age, self._dead, self._volatile = backlog_age, dead_letters, allow_volatile
        self._clock, self._monotonic, self._cache = clock, monotonic, cache
        self._lock = threading.Lock()
        self._kept: tuple[float, list[Check]] | None = None

    def checks(self) -> list[Check]:
        """Every check, at most ``cache`` seconds old."""
        with self._lock:
            now = self._monotonic()
            if self._kept is None or now - self._kept[0] >= self._cache:
                self._kept = (now, self._run())
            return self._kept[1]

    def _run(self) -> list[Check]:
        try:
            backlog = self._store.backlog()
            keeps = self._store.keeps_data()
        except StoreError:
            store = Check("store", False, "store unavailable")
            backlog = None
        else:
            store = self._store_check(keeps)
        checks = [store, self._rules_check()]
        if self._delivery is not None:
            checks.append(self._delivery())
        if backlog is not None:
            checks += [self._backlog_check(backlog), self._dead_check(backlog)]
        return checks

    def _store_check(self, keeps: bool | None) -> Check:
        if keeps is None:
            return Check("store", True, "store answers; cannot tell whether it keeps data "
                                        "across a restart (CONFIG GET not allowed)")
        if not keeps:
            return Check("store", self._volatile, "store answers but keeps nothing across a "
                         "restart" + (" (allow_volatile_redis)" if self._volatile else ""))
        return Check("store", True, "store answers")

    def _rules_check(self) -> Check:
        count = 0 if self._rules is None else len(self._rules.current.rules)
        if not count:
            return Check("rules", True, "no rules: pushes are acknowledged only")
        if self._rules.failed:
            return Check("rules", True, f"{count} rules loaded; the last edit was refused "
                                        "(see the log), the previous rules serve")
        return Check("rules", True, f"{count} rules loaded")

    def _backlog_check(self, backlog: Backlog) -> Check:
        now = self._clock()
        waited = max((now - oldest for oldest in (backlog.journal_oldest, backlog.inbox_oldest,
                                                  backlog.outbox_oldest) if oldest is not None),
                     default=0.0)
        detail = (f"{backlog.journal + backlog.inbox} pushes and {backlog.outbox} replies "
                  f"waiting, the oldest for {max(0.0, waited):.0f} s")
        if self._age and waited > self._age:
            return Check("backlog", False, f"{detail} (over ready_backlog_age {self._age:g} s)")
        return Check("backlog", True, detail)

    def _dead_check(self, backlog: Backlog) -> Check:
        dead = backlog.inbox_dead + backlog.outbox_dead
        detail = (f"{backlog.inbox_dead} pushes and {backlog.outbox_dead} replies set aside "
                  "(wxpush inbox/outbox list --state dead)")
        if self._dead and dead >= self._dead:
            return Check("dead_letters", False, f"{detail}: ready_dead_letters is {self._dead}")
        return Check("dead_letters", True, detail)


class ReadyResource:
    """200 when every check passes, else 503; either way a small JSON body of the checks."""

    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = self._readiness.checks()
        failed = [check.name for check in checks if not check.ok]
        resp.status = falcon.HTTP_503 if failed else falcon.HTTP_200
        resp.content_type = falcon.MEDIA_JSON
        resp.text = json.dumps({"ready": not failed, "failed": failed,
                                "checks": {c.name: {"ok": c.ok, "detail": c.detail}
                                           for c in checks}}, ensure_ascii=False)
