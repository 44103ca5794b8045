"""HTTP endpoints for the mini program front end: login, open data and phone numbers.

``POST /apps/{appid}/login`` exchanges a ``wx.login`` code for an opaque session token;
``POST /apps/{appid}/opendata`` opens ``encryptedData`` or CloudIDs for that session;
``POST /apps/{appid}/phone`` turns a getPhoneNumber code into the number. JSON in, JSON out;
errors are ``{"errcode": int, "errmsg": str}`` as WeChat writes them. Each request is first
rate-limited, per client address and per app (``webhook.ratelimit``). The session_key never
leaves the server, and neither it, the session token nor user data is ever logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import falcon
from Crypto.Cipher import AES

from webhook.config.settings import AppConfig, Settings
from webhook.edge import read_body
from webhook.errors import (MalformedRequest, RequestRejected, Retryable, StoreError, Unauthorized,
                            UnsupportedMediaType, WeChatAPIError)
from webhook.logsafe import Repeats, shown
from webhook.miniprogram.opendata import (check_raw_signature, decrypt_encrypted_data,
                                          parse_open_data, phone_info)
from webhook.push.messages import hashed
from webhook.ratelimit import Bucket, Limiter, RateLimited, trusted_networks
from webhook.store.base import Store
from webhook.wechat.api import WeChatAPI
from webhook.wellformed import NotText, loads

__all__ = ["register", "limiter_for", "json_body", "describe", "Endpoint", "Sessions", "Session", "new_session_token", "answer_json",
           "BadInput", "NotLoggedIn", "MAX_CLOUD_IDS", "MISSING_CREDENTIAL", "refuse"]

log = logging.getLogger(__name__)

MAX_CLOUD_IDS = 5          # getopendata takes at most 5 cloudIDs per call
MAX_CODE = 512             # far above any js_code / phone code WeChat issues
# Our own refusals, in WeChat's numbering (docs/protocol.md §5.5, §7)
INVALID_ARGS, EMPTY_BODY, BAD_FORMAT, TOO_LARGE = 40097, 44002, 47001, 45002
MISSING_CREDENTIAL, SESSION_EXPIRED, INVALID_APPID, INVALID_CODE = 41008, 42003, 40013, 40029
# WeChat errcodes caused by the caller's input: a 4xx, never a 5xx
_CODE_REFUSED = frozenset({40029, 40163, 40226, 41008})      # bad, used, blocked, missing code
_DATA_REFUSED = frozenset({40003, 40097, 44002, 47001, -601006})
_PUBLIC_5XX = {502: "WeChat refused the call: see the server log",
               503: "WeChat or the store is busy or unreachable: retry later"}


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


class BadInput(MalformedRequest):
    def __init__(self, reason: str, errcode: int = INVALID_ARGS) -> None:
        super().__init__(reason)
        self.errcode = errcode


class NotLoggedIn(Unauthorized):
    def __init__(self, reason: str, errcode: int = SESSION_EXPIRED) -> None:
        super().__init__(reason)
        self.errcode = errcode


@dataclass(frozen=True, slots=True)
class Session:
    openid: str
    unionid: str | None
    session_key: str = field(repr=False)


class Sessions:
    """Login sessions in the store, keyed by a hash of the token, with the session_key
    sealed (AES-GCM) under a key derived from the token: the store alone yields neither a
    usable token nor a session_key."""

    def __init__(self, store: Store, *, ttl: int, token_factory: Callable[[], str]) -> None:
        self.store, self.ttl, self.token_factory = store, ttl, token_factory

    @staticmethod
    def _derive(appid: str, token: str) -> tuple[str, bytes]:
        # One hash, two halves: the store key (public) and the sealing key (never stored)
        digest = hashlib.sha512(f"wxpush-session\0{appid}\0{token}".encode()).digest()
        return f"miniprogram:session:{appid}:{digest[:24].hex()}", digest[32:]

    def create(self, appid: str, session: Session) -> str:
        token = self.token_factory()
        key, secret = self._derive(appid, token)
        nonce = secrets.token_bytes(12)
        sealed, tag = AES.new(secret, AES.MODE_GCM, nonce=nonce).encrypt_and_digest(
            session.session_key.encode())
        self.store.put(key, json.dumps({
            "openid": session.openid, "unionid": session.unionid,
            "sealed": base64.b64encode(nonce + tag + sealed).decode()}), ttl=self.ttl)
        return token

    def load(self, appid: str, token: str) -> Session | None:
        key, secret = self._derive(appid, token)
        raw = self.store.get(key)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            blob = base64.b64decode(record["sealed"])
            cipher = AES.new(secret, AES.MODE_GCM, nonce=blob[:12])
            session_key = cipher.decrypt_and_verify(blob[28:], blob[12:28]).decode()
            return Session(record["openid"], record.get("unionid"), session_key)
        except (ValueError, KeyError, TypeError):   # bad JSON / base64 / tag, missing field
            return None   # a record we cannot open is no session


class Endpoint:
    """Shared edge of the mini program's endpoints: app lookup, bounded JSON body, the
    caller's session, errors as WeChat-style JSON."""

    kind = ""

    def __init__(self, *, settings: Settings, api: WeChatAPI, sessions: Sessions,
                 limiter: Limiter, repeats: Repeats, clock: Callable[[], float]) -> None:
        self.settings, self.api, self.sessions, self.clock = settings, api, sessions, clock
        self.limiter, self.repeats = limiter, repeats

    def on_post(self, req: falcon.Request, resp: falcon.Response, appid: str) -> None:
        resp.cache_control = ["no-store"]
        try:
            app = self.settings.app(appid)
            self.limiter.check(app.appid, req.remote_addr, req.get_header("X-Forwarded-For"))
            result = self.handle(app, req, self._body(req))
        except (RequestRejected, WeChatAPIError, StoreError) as exc:
            self._refuse(resp, appid, exc)
            return
        answer_json(resp, 200, result)

    def _refuse(self, resp: falcon.Response, appid: str,
                exc: RequestRejected | WeChatAPIError | StoreError) -> None:
        """Answer a refusal or a failure as ``{"errcode", "errmsg"}``, with a log line."""
        if isinstance(exc, RateLimited):
            self.repeats.log(log, logging.INFO, f"{appid}:{exc.scope}",
                             "%s appid=%s outcome=refused status=429 client=%s reason=%s",
                             self.kind, appid, shown(exc.client), exc.reason)
            resp.set_header("Retry-After", str(exc.retry_after))
            answer_json(resp, 429, {"errcode": exc.errcode, "errmsg": exc.reason})
            return
        status, errcode, errmsg = refuse(resp, exc)
        # errmsg may quote the request or WeChat: escaped, cut short, and repeated ones
        # written once per interval with a count
        self.repeats.log(log, logging.WARNING if status >= 500 else logging.INFO,
                         f"{self.kind} {status} {errcode}",
                         "%s appid=%s outcome=refused status=%d errcode=%d reason=%s",
                         self.kind, appid if appid in self.settings.apps else "-", status,
                         errcode, shown(errmsg))

    def handle(self, app: AppConfig, req: falcon.Request, body: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _body(self, req: falcon.Request) -> dict[str, Any]:
        return json_body(req, self.settings.server.max_body)

    def _caller(self, app: AppConfig, req: falcon.Request, *,
                login_code: str | None) -> Session | None:
        """The caller's session from ``Authorization: Bearer <session>``, or from a fresh
        ``wx.login`` code exchanged on the spot (and not kept); None if neither is given."""
        header = req.get_header("Authorization")
        if header is None:
            return self._exchange(app, login_code) if login_code else None
        if login_code:
            raise BadInput("give a session or a code, not both")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotLoggedIn("Authorization must be: Bearer <session>", MISSING_CREDENTIAL)
        session = self.sessions.load(app.appid, token.strip())
        if session is None:
            raise NotLoggedIn("session unknown or expired: log in again")
        return session

    def _exchange(self, app: AppConfig, code: str) -> Session:
        answer = self.api.code2session(app.appid, code)
        openid, session_key = answer.get("openid"), answer.get("session_key")
        if not isinstance(openid, str) or not openid or not isinstance(session_key, str):
            raise Retryable(-1, "jscode2session answer lacks openid or session_key")
        unionid = answer.get("unionid")
        return Session(openid, unionid if isinstance(unionid, str) else None, session_key)

    @property
    def max_age(self) -> int | None:
        return self.settings.server.opendata_max_age or None


class LoginResource(Endpoint):
    kind = "login"

    def handle(self, app: AppConfig, req: falcon.Request, body: dict[str, Any]) -> Any:
        session = self._exchange(app, _code(body))
        token = self.sessions.create(app.appid, session)
        log.info("login appid=%s user=%s outcome=ok", app.appid, hashed(session.openid))
        result = {"openid": session.openid, "session": token, "expires_in": self.sessions.ttl}
        if session.unionid:
            result["unionid"] = session.unionid
        return result


class OpenDataResource(Endpoint):
    kind = "opendata"

    def handle(self, app: AppConfig, req: falcon.Request, body: dict[str, Any]) -> Any:
        encrypted = "encryptedData" in body or "iv" in body
        cloud = "cloudID" in body or "cloudIDs" in body
        if encrypted == cloud:
            raise BadInput("give encryptedData and iv, or cloudID, or cloudIDs")
        session = self._caller(app, req, login_code=_code(body) if "code" in body else None)
        if session is None:
            raise NotLoggedIn("missing session (Authorization: Bearer) or code",
                              MISSING_CREDENTIAL)
        now = self.clock()
        if encrypted:
            if "rawData" in body or "signature" in body:
                check_raw_signature(body.get("rawData"), body.get("signature"),
                                    session.session_key)
            result = decrypt_encrypted_data(body.get("encryptedData"), body.get("iv"),
                                            session.session_key, appid=app.appid, now=now,
                                            max_age=self.max_age)
        else:
            ids = _cloud_ids(body)
            items = parse_open_data(self.api.get_open_data(app.appid, ids, openid=session.openid),
                                    appid=app.appid, now=now, max_age=self.max_age)
            result = items[0] if "cloudID" in body else {"data_list": items}
        log.info("opendata appid=%s user=%s kind=%s outcome=ok", app.appid,
                 hashed(session.openid), "encryptedData" if encrypted else "cloudID")
        return result


class PhoneResource(Endpoint):
    kind = "phone"

    def handle(self, app: AppConfig, req: falcon.Request, body: dict[str, Any]) -> Any:
        code = _code(body)   # the getPhoneNumber code; a session, if given, binds the openid
        session = self._caller(app, req, login_code=None)
        openid = session.openid if session else None
        info = self.api.get_phone_number(app.appid, code, openid=openid)
        result = phone_info(info, appid=app.appid, now=self.clock(), max_age=self.max_age)
        log.info("phone appid=%s user=%s outcome=ok", app.appid,
                 hashed(openid) if openid else "-")
        return result


def json_body(req: falcon.Request, limit: int) -> dict[str, Any]:
    """The request's body: a JSON object of valid Unicode, at most ``limit`` bytes, sent as
    ``application/json`` in any case, its charset (if named) UTF-8, as wx.request sends it by
    default (checked before the body is read); BadInput, PayloadTooLarge or
    UnsupportedMediaType otherwise."""
    media, params = falcon.parse_header(req.content_type or "")
    if media.strip().lower() != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    if params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("JSON must be UTF-8")
    raw = read_body(req, limit)
    if not raw.strip():
        raise BadInput("empty body: send a JSON object", EMPTY_BODY)
    try:
        body = loads(raw)
    except NotText:
        raise BadInput("body is not valid Unicode", BAD_FORMAT) from None
    except (ValueError, RecursionError):
        raise BadInput("body is not JSON", BAD_FORMAT) from None
    if not isinstance(body, dict):
        raise BadInput("body must be a JSON object", BAD_FORMAT)
    return body


def _code(body: dict[str, Any]) -> str:
    code = body.get("code")
    if not isinstance(code, str) or not code.strip():
        raise NotLoggedIn("missing code", MISSING_CREDENTIAL)
    if len(code) > MAX_CODE or not code.isascii() or not code.isprintable():
        raise NotLoggedIn("invalid code", INVALID_CODE)
    return code


def _cloud_ids(body: dict[str, Any]) -> list[str]:
    if "cloudID" in body and "cloudIDs" in body:
        raise BadInput("give cloudID or cloudIDs, not both")
    ids = [body["cloudID"]] if "cloudID" in body else body["cloudIDs"]
    if not isinstance(ids, list) or not ids:
        raise BadInput("cloudIDs must be a non-empty list")
    if len(ids) > MAX_CLOUD_IDS:
        raise BadInput(f"at most {MAX_CLOUD_IDS} cloudIDs per call")
    if not all(isinstance(item, str) and item and len(item) <= MAX_CODE for item in ids):
        raise BadInput("each cloudID must be a non-empty string")
    return ids


def describe(exc: Exception) -> tuple[int, int, str]:
    """(HTTP status, errcode, one-line errmsg) for an error we answer."""
    if isinstance(exc, RequestRejected):
        default = {401: MISSING_CREDENTIAL, 404: INVALID_APPID, 413: TOO_LARGE,
                   415: BAD_FORMAT}
        errcode = getattr(exc, "errcode", default.get(exc.status, INVALID_ARGS))
        return exc.status, errcode, exc.reason
    if isinstance(exc, WeChatAPIError):
        errmsg = " ".join(exc.errmsg.split()) or "error"
        if exc.errcode in _CODE_REFUSED:
            return 401, exc.errcode, errmsg
        if exc.errcode in _DATA_REFUSED:
            return 400, exc.errcode, errmsg
        return (503 if isinstance(exc, Retryable) else 502), exc.errcode, errmsg
    return 503, -1, " ".join(str(exc).split())


def refuse(resp: falcon.Response, exc: Exception) -> tuple[int, int, str]:
    """Answer ``exc`` as ``{"errcode", "errmsg"}``; its status, errcode and errmsg, for the
    log. A 5xx from WeChat or the store is about our side (WeChat's errmsg may name our IP):
    details stay in the log. One of our own refusals says what it is."""
    status, errcode, errmsg = describe(exc)
    if status == 503:
        resp.set_header("Retry-After", "1")
    public = errmsg if isinstance(exc, RequestRejected) else _PUBLIC_5XX.get(status, errmsg)
    answer_json(resp, status, {"errcode": errcode, "errmsg": public})
    return status, errcode, errmsg


def answer_json(resp: falcon.Response, status: int, body: Any) -> None:
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def limiter_for(settings: Settings, store: Store, clock: Callable[[], float]) -> Limiter:
    """The rate limits of ``[server]``; every limiter made here shares its buckets (they are
    keys in the store)."""
    server = settings.server
    return Limiter(store, per_client=Bucket(server.rate_per_client, server.burst_per_client),
                   per_app=Bucket(server.rate_per_app, server.burst_per_app),
                   trusted=trusted_networks(server.trusted_proxies), clock=clock)


def register(app: falcon.App, *, settings: Settings, api: WeChatAPI, store: Store,
             clock: Callable[[], float] = time.time,
             token_factory: Callable[[], str] = new_session_token) -> None:
    """Add the three routes under ``/apps/{appid}/``, which share their rate limits."""
    sessions = Sessions(store, ttl=settings.server.session_ttl, token_factory=token_factory)
    limiter = limiter_for(settings, store, clock)
    parts = {"settings": settings, "api": api, "sessions": sessions, "limiter": limiter,
             "repeats": Repeats(), "clock": clock}
    app.add_route("/apps/{appid}/login", LoginResource(**parts))
    app.add_route("/apps/{appid}/opendata", OpenDataResource(**parts))
    app.add_route("/apps/{appid}/phone", PhoneResource(**parts))
