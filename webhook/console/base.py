"""What every console resource shares: its parts, the session check, forms, and answers (a
page, a fragment for the script to swap in, a redirect, a refusal in words)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl

import falcon

from webhook.config.settings import Operator, Settings
from webhook.console.auth import Auth, Session, csrf_ok
from webhook.console.html import CONTENT_SECURITY_POLICY, page
from webhook.delivery.history import History
from webhook.edge import read_body
from webhook.errors import MalformedRequest, RequestRejected
from webhook.logsafe import shown
from webhook.routing.live import LiveRouter
from webhook.routing.router import Router
from webhook.store import Store
from webhook.wechat.api import WeChatAPI

__all__ = ["Parts", "Resource", "Refused", "Check", "log"]

log = logging.getLogger("webhook.console")
MAX_FORM = 16 * 1024   # a form: a reply's text and a few fields


class Refused(RequestRejected):
    """A console request refused in words the operator reads (403, 404, 409, 429 ...)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Check(Protocol):
    """One of /readyz's checks (``webhook.server.readiness.Check``)."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Parts:
    settings: Settings
    store: Store
    api: WeChatAPI
    router: Router | LiveRouter
    history: History
    auth: Auth
    readiness: Callable[[], Sequence[Check]]
    totals: Callable[[], Mapping[str, float]]
    clock: Callable[[], float] = time.time


class Resource:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.store, self.clock = parts.store, parts.clock

    # -- who -----------------------------------------------------------------------------
    def viewer(self, req: falcon.Request) -> Session:
        """The logged-in operator of a page request; to the login form otherwise."""
        session = self.parts.auth.session(req)
        if session is None:
            raise falcon.HTTPSeeOther("/console/login")
        return session

    def actor(self, req: falcon.Request, form: dict[str, str]) -> Session:
        """The logged-in operator of a state-changing request that carries its CSRF token."""
        session = self.parts.auth.session(req)
        if session is None:
            raise Refused(403, "not logged in (or the session expired): log in again")
        if not csrf_ok(req, session.csrf, form):
            log.warning("console refused action=%s operator=%s reason=csrf",
                        shown(req.path), shown(session.operator.name))
            raise Refused(403, "missing or wrong CSRF token: reload the page")
        return session

    def check_app(self, operator: Operator, appid: str) -> None:
        if appid not in self.parts.settings.apps or not operator.sees(appid):
            raise Refused(404, "no such app")

    def form(self, req: falcon.Request) -> dict[str, str]:
        """A urlencoded form of valid UTF-8 (a field given twice: its last value)."""
        kind = (req.content_type or "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return {}
        body = read_body(req, MAX_FORM)
        try:
            return dict(parse_qsl(body.decode("ascii"), keep_blank_values=True,
                                  strict_parsing=False, encoding="utf-8", errors="strict",
                                  max_num_fields=20))
        except (UnicodeDecodeError, ValueError):
            raise MalformedRequest("form is not valid UTF-8 or has too many fields") from None

    def flagged(self, operator: Operator) -> int:
        if not self.parts.history.enabled:
            return 0
        return len(self.store.history_conversations(appids=operator.apps, flagged=True,
                                                    limit=1000))

    # -- answers -------------------------------------------------------------------------
    def render(self, resp: falcon.Response, session: Session, title: str, body: str, *,
               active: str = "") -> None:
        html_page(resp, page(title, body, operator=session.operator.name, csrf=session.csrf,
                             active=active, flagged=self.flagged(session.operator)))

    @staticmethod
    def done(req: falcon.Request, resp: falcon.Response, where: str, message: str) -> None:
        """A finished action: the script gets ``message``; a browser without it goes back."""
        if req.get_header("X-Requested-With") == "console":
            plain(resp, falcon.HTTP_200, message)
        else:
            raise falcon.HTTPSeeOther(where)


def secure_headers(resp: falcon.Response) -> None:
    resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("X-Frame-Options", "DENY")
    resp.set_header("Referrer-Policy", "no-referrer")
    resp.cache_control = ["no-store"]


def html_page(resp: falcon.Response, markup: str) -> None:
    secure_headers(resp)
    resp.content_type = "text/html; charset=utf-8"
    resp.text = markup


def plain(resp: falcon.Response, status: str, text: str) -> None:
    secure_headers(resp)
    resp.status, resp.content_type, resp.text = status, falcon.MEDIA_TEXT, text
