"""The push endpoint and the health check: query and body in, status and body out; and the
error handlers that turn a refusal into a short plain reason."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import falcon

from webhook.config.settings import Settings
from webhook.delivery.intake import Intake
from webhook.edge import query, read_body
from webhook.errors import RequestRejected, StoreError
from webhook.logsafe import Repeats, shown
from webhook.metrics import ANSWER_SECONDS, PUSHES, REJECTIONS, UNKNOWN, app_label, reason
from webhook.push.receive import keyring_for, open_push, verify_url

__all__ = ["WeChatResource", "HealthResource", "add_error_handlers"]

log = logging.getLogger(__name__)
_CONTENT_TYPES = {"xml": "application/xml; charset=utf-8", "json": "application/json; charset=utf-8"}


class WeChatResource:
    """``/wechat/{appid}``: GET verifies the URL, POST receives a push."""

    def __init__(self, *, settings: Settings, intake: Intake, clock: Callable[[], float],
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self._settings = settings
        self._keys = {appid: keyring_for(app) for appid, app in settings.apps.items()}
        self._intake, self._clock, self._timer = intake, clock, timer
        self._tolerance = settings.server.timestamp_tolerance
        self._max_body = settings.server.max_body

    def on_get(self, req: falcon.Request, resp: falcon.Response, appid: str) -> None:
        app = self._settings.app(appid)
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = verify_url(app, query(req), now=self._clock(), tolerance=self._tolerance)

    def on_post(self, req: falcon.Request, resp: falcon.Response, appid: str) -> None:
        started = self._timer()
        try:
            app = self._settings.app(appid)
            body = read_body(req, self._max_body)
            push = open_push(app, self._keys.get(appid), query(req), body, now=self._clock(),
                             tolerance=self._tolerance)
            answer = self._intake.accept(app, push)
        except RequestRejected:
            PUSHES.labels(app_label(appid, self._settings.apps), UNKNOWN, "rejected").inc()
            raise
        # ``success`` is never encrypted (docs/protocol.md §2.5): an encrypted ack breaks the chat.
        resp.content_type = falcon.MEDIA_TEXT if answer == "success" else _CONTENT_TYPES[app.format]
        resp.text = answer
        ANSWER_SECONDS.labels(appid).observe(self._timer() - started)


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok"


def add_error_handlers(app: falcon.App, *, repeats: Repeats | None = None) -> None:
    """Rejections become a short plain reason and one log line; never a traceback. The log
    shows what came from the request escaped and cut short (``logsafe.shown``), and writes
    one line per kind of refusal per interval, with a count (``repeats``): a flood of bad
    requests writes a few lines, not one each."""
    repeats = repeats or Repeats()

    def rejected(req: falcon.Request, resp: falcon.Response, ex: RequestRejected,
                 params: dict[str, Any]) -> None:
        REJECTIONS.labels(reason(type(ex).__name__)).inc()
        detail = f" detail={shown(ex.detail)}" if ex.detail else ""
        repeats.log(log, logging.WARNING, type(ex).__name__,
                    "rejected %s %s status=%d reason=%s%s", req.method, shown(req.path),
                    ex.status, shown(ex.reason), detail)
        _plain(resp, falcon.code_to_http_status(ex.status), ex.reason)

    def unavailable(req: falcon.Request, resp: falcon.Response, ex: StoreError,
                    params: dict[str, Any]) -> None:
        # Unanswered, WeChat delivers the push again; nothing was recorded.
        repeats.log(log, logging.ERROR, "store unavailable", "store unavailable %s %s: %s",
                    req.method, shown(req.path), ex)
        _plain(resp, falcon.HTTP_503, "store unavailable")

    def failed(req: falcon.Request, resp: falcon.Response, ex: Exception,
               params: dict[str, Any]) -> None:
        # A bug: falcon's own handler would log the raw path and query string.
        repeats.log(log, logging.ERROR, f"internal {type(ex).__name__}", "internal error %s %s",
                    req.method, shown(req.path), exc_info=ex)
        _plain(resp, falcon.HTTP_500, "internal error")

    app.add_error_handler(Exception, failed)
    app.add_error_handler(RequestRejected, rejected)
    app.add_error_handler(StoreError, unavailable)


def _plain(resp: falcon.Response, status: str, text: str) -> None:
    resp.status, resp.content_type, resp.text = status, falcon.MEDIA_TEXT, text
