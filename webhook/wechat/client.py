"""The WeChat server API over one keep-alive ``requests.Session``; errcodes become exceptions.

Every failure is a ``WeChatAPIError``: an errcode goes through ``errors.api_error``; HTTP 5xx,
timeouts, resets and garbage bodies are ``Retryable``. No exception or log line carries the
access_token, secret or js_code: requests' own exceptions name the full URL, so they are never
chained, and urllib3's debug lines are scrubbed (``scrub``).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests
from requests.structures import CaseInsensitiveDict

from webhook.errors import Permanent, Retryable, TimedOut, api_error
from webhook.wechat.transport import KeptAlive
from webhook.wellformed import loads

__all__ = ["WeChatClient", "TokenGrant", "scrub", "POOL_SIZE"]

log = logging.getLogger(__name__)

# Credentials that travel in WeChat query strings (docs/protocol.md §5-§7).
_SECRET_PARAMS = re.compile(r"((?:access_token|secret|js_code)=)[^&\s\"'#]*")
POOL_SIZE = 32   # connections kept per host for calls other than sends (request threads,
                 # handlers, token fetches); a process that sends replies adds one per send


def scrub(text: str) -> str:
    """``text`` with the values of access_token, secret and js_code replaced by ``***``."""
    return _SECRET_PARAMS.sub(r"\1***", text)


class _ScrubFilter(logging.Filter):
    """urllib3 logs request lines and retries with their query string; mask credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):   # a malformed record: leave it to the handler
            return True
        if "=" in message:
            record.msg, record.args = scrub(message), ()
        return True


# Logger filters only see records of their own logger: every urllib3 module that logs a URL.
for _name in ("connectionpool", "connection", "poolmanager", "response", "util.retry"):
    logging.getLogger(f"urllib3.{_name}").addFilter(_ScrubFilter())


def _new_session(connections: int) -> requests.Session:
    """A keep-alive Session keeping up to ``connections`` connections per host: as many as
    the process makes calls at once, or the ones past it are closed after each call and new
    ones opened for the next (a TLS handshake each, against WeChat)."""
    session = requests.Session()
    # requests would read the environment (proxies, CA bundle) and ~/.netrc on every call;
    # each client resolves the proxy and CA settings once instead.
    session.trust_env = False
    # No transport retries: a send is not idempotent; callers retry with backoff instead.
    adapter = KeptAlive(connections)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "wxpush"
    return session


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str = field(repr=False)
    expires_in: int


class WeChatClient:
    """Plain calls, one per WeChat endpoint; no token logic (see ``webhook.wechat.tokens``).

    ``session`` is the test seam: pass a Session with a transport adapter mounted; without
    one, a Session is made whose transport (``webhook.wechat.transport``) keeps up to
    ``connections`` connections alive per host. The proxy
    for ``base_url`` (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, unless ``NO_PROXY``
    names its host) and the CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) are read
    from the environment when the client is made, as requests reads them.
    """

    def __init__(self, base_url: str, *, session: requests.Session | None = None,
                 connections: int = POOL_SIZE, timeout: tuple[float, float] = (3.05, 10),
                 token_timeout: tuple[float, float] = (3.05, 5)) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session if session is not None else _new_session(connections)
        self._proxies = requests.utils.get_environ_proxies(self.base_url)
        self._verify = os.environ.get("REQUESTS_CA_BUNDLE") or \
            os.environ.get("CURL_CA_BUNDLE") or True
        self.timeout = timeout
        # Shorter than the token lock's lease, so a slow fetch never outlives the lock.
        self.token_timeout = token_timeout

    # -- access_token (docs/protocol.md §6) -----------------------------------------------------
    def token(self, *, appid: str, secret: str) -> TokenGrant:
        body = self._call("GET", "/cgi-bin/token", timeout=self.token_timeout, params={
            "grant_type": "client_credential", "appid": appid, "secret": secret})
        return _grant(body)

    def stable_token(self, *, appid: str, secret: str, force_refresh: bool = False) -> TokenGrant:
        body = self._call("POST", "/cgi-bin/stable_token", timeout=self.token_timeout, json={
            "grant_type": "client_credential", "appid": appid, "secret": secret,
            "force_refresh": force_refresh})
        return _grant(body)

    # -- customer-service messages and media (docs/protocol.md §5) ------------------------------
    def send(self, *, access_token: str, touser: str, payload: Mapping[str, Any]) -> None:
        self._call("POST", "/cgi-bin/message/custom/send", token=access_token,
                   json={**payload, "touser": touser})

    def typing(self, *, access_token: str, touser: str, command: str = "Typing") -> None:
        self._call("POST", "/cgi-bin/message/custom/business/typing", token=access_token,
                   json={"touser": touser, "command": command})

    def upload_media(self, *, access_token: str, filename: str, data: bytes,
                     media_type: str = "image") -> str:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        body = self._call("POST", "/cgi-bin/media/upload", token=access_token,
                          params={"type": media_type},
                          files={"media": (filename, data, content_type)})
        media_id = body.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise Retryable(-1, "upload answer has no media_id")
        return media_id

    def get_media(self, *, access_token: str, media_id: str) -> bytes:
        """The file's bytes; WeChat answers errors as JSON, files with their own type."""
        response = self._exchange("GET", "/cgi-bin/media/get", token=access_token,
                                  params={"media_id": media_id}, timeout=self.timeout)
        kind = response.headers.get("Content-Type", "")
        if response.status_code == 200 and not ("json" in kind or kind.startswith("text/")):
            return response.content
        _decode(response, token=access_token)
        raise Retryable(-1, f"no media in the answer ({kind or 'no content type'})")

    # -- login and open data (docs/protocol.md §7) ----------------------------------------------
    def code2session(self, *, appid: str, secret: str, js_code: str) -> dict[str, Any]:
        return self._call("GET", "/sns/jscode2session", params={
            "appid": appid, "secret": secret, "js_code": js_code,
            "grant_type": "authorization_code"})

    def get_open_data(self, *, access_token: str, cloudid_list: list[str],
                      openid: str | None = None) -> list[dict[str, Any]]:
        body = self._call("POST", "/wxa/getopendata", token=access_token,
                          params={"openid": openid} if openid else None,
                          json={"cloudid_list": cloudid_list})
        data = body.get("data_list")
        if not isinstance(data, list):
            raise Retryable(-1, "getopendata answer has no data_list")
        return data

    def get_phone_number(self, *, access_token: str, code: str,
                         openid: str | None = None) -> dict[str, Any]:
        payload = {"code": code, **({"openid": openid} if openid else {})}
        body = self._call("POST", "/wxa/business/getuserphonenumber", token=access_token,
                          json=payload)
        info = body.get("phone_info")
        if not isinstance(info, dict):
            raise Retryable(-1, "getuserphonenumber answer has no phone_info")
        return info

    # -- cloud development (docs/protocol.md §9; typed in webhook.wechat.cloud) -----------------
    def tcb(self, action: str, *, access_token: str, payload: Mapping[str, Any] | None = None,
            raw: bytes | None = None, params: Mapping[str, str] | None = None,
            timeout: tuple[float, float] | None = None) -> dict[str, Any]:
        """``POST /tcb/<action>``: every cloud development API takes a JSON body (``payload``)
        and answers a JSON object; invokecloudfunction's body is the function's own event
        (``raw``, JSON text), with env and name in the query."""
        if raw is not None:
            return self._call("POST", f"/tcb/{action}", token=access_token, params=params,
                              timeout=timeout, data=raw,
                              headers={"Content-Type": "application/json"})
        return self._call("POST", f"/tcb/{action}", token=access_token, params=params,
                          timeout=timeout, json=payload)

    # -- transport ------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, token: str | None = None,
              timeout: tuple[float, float] | None = None, **kwargs: Any) -> dict[str, Any]:
        response = self._exchange(method, path, token=token, timeout=timeout or self.timeout,
                                  **kwargs)
        return _decode(response, token=token)

    def _exchange(self, method: str, path: str, *, token: str | None,
                  timeout: tuple[float, float], params: Mapping[str, Any] | None = None,
                  **kwargs: Any) -> requests.Response:
        query = dict(params or {})
        if token is not None:
            query["access_token"] = token
        failure, error = None, Retryable
        try:
            if kwargs.keys() <= {"json"}:
                response = self._plain(method, path, query, kwargs.get("json"), timeout)
            else:
                response = self.session.request(method, self.base_url + path, params=query,
                                                timeout=timeout, proxies=self._proxies,
                                                verify=self._verify, **kwargs)
        except requests.Timeout:
            failure, error = "timeout", TimedOut
        except requests.ConnectionError:
            failure = "connection failed"
        except requests.RequestException as exc:
            failure = type(exc).__name__
        if failure is not None:
            # Raised outside the except block: requests' exception (with the URL) is not chained.
            log.warning("wechat call failed path=%s reason=%s", path, failure)
            raise error(-1, f"{failure} on {path}")
        return response

    def _plain(self, method: str, path: str, query: Mapping[str, Any], payload: Any,
               timeout: tuple[float, float]) -> requests.Response:
        """A call with a JSON body, or none, handed to the session's transport as it is.
        ``Session.request`` would merge settings, cookies and hooks and parse the URL once
        more (bench/api_call.py prints what that adds to a call's CPU); WeChat's API sets
        no cookies and answers without redirects."""
        request = requests.PreparedRequest()
        request.method = method
        request.url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        request.headers = CaseInsensitiveDict(self.session.headers)
        request.hooks = {"response": []}
        if payload is not None:
            request.body = json.dumps(payload, allow_nan=False).encode("utf-8")
            request.headers["Content-Type"] = "application/json"
            request.headers["Content-Length"] = str(len(request.body))
        elif method != "GET":
            request.headers["Content-Length"] = "0"
        response = self.session.get_adapter(request.url).send(
            request, timeout=timeout, proxies=self._proxies, verify=self._verify)
        response.content   # read whole here, where a connection lost midway fails the call
        return response


def _decode(response: requests.Response, *, token: str | None) -> dict[str, Any]:
    """The JSON object of an answer, or the WeChatAPIError it stands for."""
    status = response.status_code
    try:
        body = loads(response.content)
    except (ValueError, RecursionError):   # HTML error pages, truncated or absurd JSON, text
        body = None                        # that is not Unicode (stored and shown later)
    if not isinstance(body, dict):
        if status >= 500 or status == 429:
            raise Retryable(status, f"HTTP {status}")
        if status >= 400:
            raise Permanent(status, f"HTTP {status}")
        raise Retryable(-1, f"HTTP {status} with a body that is not a JSON object")
    errcode = body.get("errcode", 0) or 0   # success answers often omit errcode
    if isinstance(errcode, str) and errcode.lstrip("-").isdigit():
        errcode = int(errcode)
    if not isinstance(errcode, int) or isinstance(errcode, bool):
        raise Retryable(-1, "errcode is not an integer")
    if errcode:
        errmsg = str(body.get("errmsg", ""))[:200]
        if token:
            errmsg = errmsg.replace(token, "***")
        raise api_error(errcode, scrub(errmsg))
    if status >= 500 or status == 429:
        raise Retryable(status, f"HTTP {status}")
    if status >= 400:
        raise Permanent(status, f"HTTP {status}")
    return body


def _grant(body: Mapping[str, Any]) -> TokenGrant:
    token, expires_in = body.get("access_token"), body.get("expires_in")
    if not isinstance(token, str) or not token:
        raise Retryable(-1, "token answer has no access_token")
    try:
        seconds = int(expires_in)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Retryable(-1, "token answer has no expires_in") from None
    if seconds <= 0:
        raise Retryable(-1, "token answer has expires_in <= 0")
    return TokenGrant(access_token=token, expires_in=seconds)
