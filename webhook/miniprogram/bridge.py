"""``POST /apps/{appid}/functions/{name}``: a mini program's users call cloud functions of
another app (or of their own) through wxpush.

The caller is logged in to ``appid`` (``Authorization: Bearer <session>`` from
``/apps/{appid}/login``); ``appid``'s ``[[apps.bridge]]`` tables say which functions of which
app its users may call, and none by default. The body is the function's data, a JSON
object; wxpush writes the verified caller into it (``openid``, and ``appid`` the calling
app), over anything the client sent under those names, and runs the function in the target
app's cloud_env with the target's token. Everything is checked before WeChat is called:
the app (404), the session (401), the function allowed (403), the session's and the app's
rate limit (429), the body (415, 413, 400). Then: 200 ``{"errcode":0,"errmsg":"ok","data":
<the result>}``, or 404 (no such function), 504 (cut off after WeChat's 5 s), 502 (the
function failed, with its message; or its result is not JSON).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import falcon

from webhook.config.cloud import FUNCTION_NAME
from webhook.config.settings import AppConfig, Settings
from webhook.errors import (CloudNotFound, FunctionFailed, FunctionTimedOut, RequestRejected,
                            StoreError, WeChatAPIError)
from webhook.logsafe import Repeats, shown
from webhook.miniprogram.endpoints import (MISSING_CREDENTIAL, Endpoint, NotLoggedIn, Sessions,
                                           answer_json, limiter_for, new_session_token)
from webhook.push.messages import hashed
from webhook.store.base import Store
from webhook.wechat.api import WeChatAPI

__all__ = ["FunctionResource", "FunctionRefused", "register", "NOT_ALLOWED"]

log = logging.getLogger(__name__)

NOT_ALLOWED = 48001   # WeChat's "api unauthorized", for a function not bridged to this app


class FunctionRefused(RequestRejected):
    """A function call answered with ``status`` and ``errcode``: our refusal (403), or what
    became of the function (404, 502, 504). ``reason`` is shown to the caller."""

    def __init__(self, status: int, errcode: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.errcode = status, errcode


class FunctionResource(Endpoint):
    kind = "function"

    def on_post(self, req: falcon.Request, resp: falcon.Response, appid: str,
                name: str) -> None:
        resp.cache_control = ["no-store"]
        started = time.monotonic()
        try:
            app = self.settings.app(appid)
            token, session = self._session(app, req)
            target = _target(app, name)
            self.limiter.check(app.appid, req.remote_addr, req.get_header("X-Forwarded-For"),
                               session=hashlib.sha256(token.encode()).hexdigest()[:24])
            data = {**self._body(req), "openid": session.openid, "appid": app.appid}
            result = self._run(target, name, data)
        except (RequestRejected, WeChatAPIError, StoreError) as exc:
            self._refuse(resp, appid, exc)
            return
        log.info("function appid=%s target=%s name=%s user=%s outcome=ok ms=%d", app.appid,
                 target, name, hashed(session.openid), (time.monotonic() - started) * 1000)
        answer_json(resp, 200, {"errcode": 0, "errmsg": "ok", "data": result})

    def _session(self, app: AppConfig, req: falcon.Request) -> tuple[str, Any]:
        session = self._caller(app, req, login_code=None)
        if session is None:
            raise NotLoggedIn("missing session: Authorization: Bearer <session from "
                              f"/apps/{app.appid}/login>", MISSING_CREDENTIAL)
        return req.get_header("Authorization").partition(" ")[2].strip(), session

    def _run(self, target: str, name: str, data: dict[str, Any]) -> Any:
        try:
            return self.api.cloud.call_function(target, name, data)
        except FunctionTimedOut as exc:
            raise FunctionRefused(504, exc.errcode, f"function {name} timed out: WeChat stops "
                                  "a function after 5 s") from None
        except FunctionFailed as exc:
            raise FunctionRefused(502, exc.errcode, f"function {name} failed: "
                                  f"{' '.join(exc.errmsg.split())[:300]}") from None
        except CloudNotFound as exc:
            if exc.what == "environment":
                raise FunctionRefused(502, exc.errcode, f"the cloud environment of {target} was "
                                      "not found: check its cloud_env") from None
            raise FunctionRefused(404, exc.errcode, f"unknown function {name}") from None


def _target(app: AppConfig, name: str) -> str:
    """The app whose function ``name`` the users of ``app`` may call (403 if none)."""
    if FUNCTION_NAME.fullmatch(name):
        for bridge in app.bridge:
            if name in bridge.functions:
                return bridge.app
    raise FunctionRefused(403, NOT_ALLOWED, f"function {shown(name, 64)} is not allowed for "
                          "this app")


def register(app: falcon.App, *, settings: Settings, api: WeChatAPI, store: Store,
             clock: Callable[[], float] = time.time) -> None:
    """Add the route; sessions and rate limits are those of the other ``/apps/`` endpoints
    (the same store keys)."""
    app.add_route("/apps/{appid}/functions/{name}", FunctionResource(
        settings=settings, api=api, limiter=limiter_for(settings, store, clock),
        repeats=Repeats(), clock=clock, sessions=Sessions(
            store, ttl=settings.server.session_ttl, token_factory=new_session_token)))
