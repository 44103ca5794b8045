"""The token service: the shared access_token for the business's other back ends.

WeChat allows one valid access_token per app at a time, so every system calling WeChat for
an app must share one, from one place (the "central control server" of WeChat's
access_token page, docs/protocol.md §6). wxpush already keeps it; these endpoints lend it:

- ``GET /apps/{appid}/access_token``: ``{"access_token": ..., "expires_in": seconds left}``;
- ``POST /apps/{appid}/access_token/invalid`` with ``{"access_token": <the token WeChat
  refused with 40001>}``: replaced only if it is still the current one (once a minute at
  most, as for wxpush's own calls), and the current one answered.

A client sends ``Authorization: Bearer <key>``; ``[[clients]]`` keeps each key's sha256 and
the apps it may read. The digest is compared with every client's in constant time. 401 for
an unknown key, 403 for an app not granted to it; errors are ``{"errcode", "errmsg"}``.
Neither key nor token is ever logged, and answers are ``Cache-Control: no-store``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import falcon

from webhook.config.settings import ClientConfig, Settings
from webhook.errors import RequestRejected, StoreError, Unauthorized, WeChatAPIError
from webhook.logsafe import Repeats, shown
from webhook.miniprogram.endpoints import BadInput, answer_json, json_body, refuse
from webhook.wechat.tokens import TokenProvider

__all__ = ["TokenResource", "register", "key_digest"]

log = logging.getLogger(__name__)

NOT_GRANTED = 48001   # WeChat's "api unauthorized"; an unknown key is 41008, as any 401
MAX_TOKEN = 1024


class NotGranted(RequestRejected):
    status, errcode = 403, NOT_GRANTED


def key_digest(key: str) -> str:
    """How ``[[clients]]`` keeps an API key: the hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class TokenResource:
    """``GET /apps/{appid}/access_token``, and ``POST .../invalid`` (falcon's ``suffix``)."""

    def __init__(self, *, settings: Settings, tokens: TokenProvider, repeats: Repeats,
                 clock: Callable[[], float]) -> None:
        self.settings, self.tokens, self.repeats, self.clock = settings, tokens, repeats, clock

    def _client(self, req: falcon.Request, appid: str) -> ClientConfig:
        scheme, _, key = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("Authorization must be: Bearer <API key>")
        digest = key_digest(key.strip())
        found = None
        for client in self.settings.clients:   # every one compared: the time tells nothing
            if hmac.compare_digest(digest, client.key_sha256):
                found = client
        if found is None:
            raise Unauthorized("unknown API key")
        if appid not in found.apps:
            raise NotGranted(f"client {found.name} may not read this app's token")
        return found

    def _answer(self, req: falcon.Request, resp: falcon.Response, appid: str,
                fetch: Callable[[], tuple[str, float]], what: str) -> None:
        resp.cache_control = ["no-store"]
        try:
            client = self._client(req, appid)
            token, expires_at = fetch()
        except (RequestRejected, WeChatAPIError, StoreError) as exc:
            status, _, errmsg = refuse(resp, exc)
            self.repeats.log(log, logging.WARNING, f"{what} {status}", "%s appid=%s "
                             "outcome=refused status=%d reason=%s client=%s", what,
                             shown(appid, 64), status, shown(errmsg), shown(req.remote_addr))
            return
        expires_in = max(0, int(expires_at - self.clock()))
        log.info("%s appid=%s client=%s outcome=ok expires_in=%d", what, appid, client.name,
                 expires_in)
        answer_json(resp, 200, {"access_token": token, "expires_in": expires_in})


    def on_get(self, req: falcon.Request, resp: falcon.Response, appid: str) -> None:
        self._answer(req, resp, appid, lambda: self.tokens.current(appid), "token served")

    def on_post_invalid(self, req: falcon.Request, resp: falcon.Response, appid: str) -> None:
        def replace() -> tuple[str, float]:
            refused = json_body(req, self.settings.server.max_body).get("access_token")
            if not isinstance(refused, str) or not refused or len(refused) > MAX_TOKEN:
                raise BadInput("give the refused token: {\"access_token\": \"...\"}")
            return self.tokens.replace(appid, refused)
        self._answer(req, resp, appid, replace, "token reported")


def register(app: falcon.App, *, settings: Settings, tokens: TokenProvider,
             clock: Callable[[], float] = time.time) -> None:
    resource = TokenResource(settings=settings, tokens=tokens, repeats=Repeats(), clock=clock)
    app.add_route("/apps/{appid}/access_token", resource)
    app.add_route("/apps/{appid}/access_token/invalid", resource, suffix="invalid")
