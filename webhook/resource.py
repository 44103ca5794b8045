"""The HTTP edge: query and body in, status and body out. The only module that knows Falcon
besides the composition root (and the mini program endpoints in ``miniprogram``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import falcon

from webhook.delivery import Intake
from webhook.errors import MalformedRequest, PayloadTooLarge, RequestRejected, StoreError, UnknownApp
from webhook.logsafe import Repeats, shown
from webhook.receive import keyring_for, open_push, verify_url
from webhook.settings import AppConfig

__all__ = ["WeChatResource", "HealthResource", "read_body", "query", "add_error_handlers"]

log = logging.getLogger(__name__)
_CONTENT_TYPES = {"xml": "application/xml; charset=utf-8", "json": "application/json; charset=utf-8"}


def query(req: falcon.Request) -> Mapping[str, str]:
    """The query string as single values (falcon's own dict, read only); a repeated parameter
    is malformed. Falcon decodes invalid UTF-8 in a value to U+FFFD: values are always valid
    Unicode, and one sent that way fails its signature like any other altered value."""
    params = req.params
    for key, value in params.items():
        if type(value) is not str:  # noqa: E721
            raise MalformedRequest(f"query parameter {shown(key, 24)} repeated")
    return cast(Mapping[str, str], params)


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The body, refusing anything over ``limit`` bytes without reading it when declared.

    Read from the server's input itself: gunicorn's ends where the body ends, whether its
    length is declared or it comes chunked. (falcon's ``bounded_stream`` reads a chunked body
    as empty, and costs a request more than the read.)
    """
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    body = req.stream.read(limit + 1 if length is None else length)
    if len(body) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    return body


class WeChatResource:
    """``/wechat/{appid}``: GET verifies the URL, POST receives a push."""

    def __init__(self, *, apps: Mapping[str, AppConfig], intake: Intake,
                 clock: Callable[[], float], tolerance: int, max_body: int) -> None:
        self._apps = dict(apps)
        self._keys = {appid: keyring_for(app) for appid, app in apps.items()}
        self._intake, self._clock = intake, clock
        self._tolerance, self._max_body = tolerance, max_body

    def _app(self, appid: str) -> AppConfig:
        app = self._apps.get(appid)
        if app is None:
            raise UnknownApp("unknown appid")
        return app

    def on_get(self, req: falcon.Request, resp: falcon.Response, appid: str) -> None:
        app = self._app(appid)
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = verify_url(app, query(req), now=self._clock(), tolerance=self._tolerance)

    def on_post(self, req: falcon.Request, resp: falcon.Response, appid: str) -> None:
        app = self._app(appid)
        body = read_body(req, self._max_body)
        push = open_push(app, self._keys.get(appid), query(req), body, now=self._clock(),
                         tolerance=self._tolerance)
        answer = self._intake.accept(app, push)
        # ``success`` is never encrypted (docs/protocol.md §2.5): an encrypted ack breaks the chat.
        resp.content_type = falcon.MEDIA_TEXT if answer == "success" else _CONTENT_TYPES[app.format]
        resp.text = answer


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
