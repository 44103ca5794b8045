"""The Emulator: a Falcon app answering WeChat's server API with WeChat's semantics.

Every request goes through one sink: faults are drawn, the endpoint runs under the lock, the
call is recorded (without its access_token) and answered. Unknown paths answer 404 JSON and
are recorded too, so a test fails loudly on a call nobody expected. ``/_emulator/...`` is the
control plane (``webhook.testing.emulator.control``), never recorded nor faulted.
"""

from __future__ import annotations

import json
import math
import random
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import falcon

from webhook.push.messages import Message
from webhook.testing.emulator import cloud, control, database, media, messaging, opendata, tokens
from webhook.testing.emulator.state import (AppState, Call, CloudEnv, Fail, Faults, Grant, Later,
                                            MediaItem, Part, Raw, Request, TokenRecord)

__all__ = ["Emulator", "ROUTES"]

Endpoint = Callable[["Emulator", Request], "dict[str, Any] | Raw | Later"]

# path -> (HTTP method, endpoint); docs/protocol.md §5-7, §9
ROUTES: dict[str, tuple[str, Endpoint]] = {
    "/cgi-bin/token": ("GET", tokens.fetch_token),
    "/cgi-bin/stable_token": ("POST", tokens.fetch_stable_token),
    "/cgi-bin/message/custom/send": ("POST", messaging.send),
    "/cgi-bin/message/custom/business/typing": ("POST", messaging.typing),
    "/cgi-bin/media/upload": ("POST", media.upload),
    "/cgi-bin/media/get": ("GET", media.get),
    "/sns/jscode2session": ("GET", opendata.jscode2session),
    "/wxa/getopendata": ("POST", opendata.getopendata),
    "/wxa/business/getuserphonenumber": ("POST", opendata.getuserphonenumber),
    "/tcb/invokecloudfunction": ("POST", cloud.invoke),
    **{f"/tcb/{action}": ("POST", database.endpoint(action)) for action in
       ("databasequery", "databasecount", "databaseadd", "databaseupdate", "databasedelete")},
    "/tcb/uploadfile": ("POST", cloud.uploadfile),
    "/tcb/batchdownloadfile": ("POST", cloud.batchdownloadfile),
    "/tcb/batchdeletefile": ("POST", cloud.batchdeletefile),
}

_TOKEN_ALPHABET = string.ascii_letters + string.digits + "_-"


class Emulator(cloud.CloudControl):
    """WeChat's API for tests. ``emulator.app`` is the WSGI app; methods drive and inspect it.

    ``clock`` is a callable returning unix seconds (tests pass a fake clock, or call
    ``advance``); ``seed`` fixes token / id generation and fault draws. ``function_limit``:
    the seconds after which a cloud function is cut off (WeChat's 5).
    """

    function_limit = cloud.FUNCTION_LIMIT

    def __init__(self, *, clock: Callable[[], float] = time.time, seed: int = 0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.lock = threading.RLock()
        self._clock, self._sleep = clock, sleep
        self.rng = random.Random(seed)
        self._fault_rng = random.Random(seed + 1)
        self.apps: dict[str, AppState] = {}
        self.cloud_envs: dict[str, CloudEnv] = {}   # by env id; kept by reset, like apps
        self._in_flight: Counter[str] = Counter()   # path -> requests received, not answered
        self._clear()
        self.app = falcon.App()
        self.app.add_sink(self._sink, prefix="/")

    # --- state used by the endpoints ---------------------------------------------------------

    def _clear(self) -> None:
        self._offset = 0.0
        self.tokens: dict[str, TokenRecord] = {}
        self.media: dict[str, MediaItem] = {}
        self.grants: dict[str, Grant] = {}
        self.sent_log: list[tuple[str, str, dict[str, Any]]] = []
        self._calls: list[Call] = []
        self._faults = Faults()
        self._queued: dict[str, deque[tuple[int | None, int | None]]] = {}
        self.apps = {appid: AppState(appid, app.secret) for appid, app in self.apps.items()}

    def now(self) -> float:
        """The emulator's time: the clock plus everything ``advance`` added."""
        return self._clock() + self._offset

    def new_token(self) -> str:
        return "".join(self.rng.choices(_TOKEN_ALPHABET, k=136))

    def new_id(self, length: int) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits, k=length))

    def app_state(self, appid: str) -> AppState:
        try:
            return self.apps[appid]
        except KeyError:
            raise ValueError(f"unknown appid {appid!r}: register_app it first") from None

    # --- control plane -----------------------------------------------------------------------

    def register_app(self, appid: str, secret: str) -> None:
        """Make ``appid`` known with ``secret`` (re-registering changes the secret only)."""
        with self.lock:
            if appid in self.apps:
                self.apps[appid].secret = secret
            else:
                self.apps[appid] = AppState(appid, secret)

    def notify_push(self, appid: str, message: Message | Mapping[str, Any]) -> None:
        """WeChat got this push from the user: learn the openid, open its quota window."""
        if isinstance(message, Message):
            message = {"FromUserName": message.from_user, "MsgType": message.msg_type,
                       "CreateTime": message.create_time,
                       "Event": getattr(message, "event", None)}
        with self.lock:
            messaging.learn_push(self, self.app_state(appid), message)

    def calls(self, path: str | None = None, *, appid: str | None = None) -> list[Call]:
        """Recorded API calls, oldest first, optionally for one path and/or app."""
        with self.lock:
            return [c for c in self._calls
                    if (path is None or c.path == path) and (appid is None or c.appid == appid)]

    def sent(self, appid: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        """Accepted custom/send messages as (appid, touser, payload without touser)."""
        with self.lock:
            return [s for s in self.sent_log if appid is None or s[0] == appid]

    def token_fetches(self, appid: str) -> dict[str, int]:
        """Successful fetches: ``token``, ``stable_token`` (calls), ``stable_issued`` (new
        stable tokens), ``forced`` (force_refresh that took effect)."""
        with self.lock:
            return dict(self.app_state(appid).fetches)

    def set_faults(self, *, errcode_rate: float = 0.0, http502_rate: float = 0.0,
                   delay_rate: float = 0.0, delay_seconds: float = 0.0,
                   force_40001_rate: float = 0.0, paths: tuple[str, ...] = (),
                   latency: float = 0.0) -> None:
        """Replace the fault rates (0..1 each); ``paths`` limits them to these path prefixes.

        ``latency`` seconds are added to every answer of those paths, failures included:
        WeChat's API answers in tens of milliseconds from a server in mainland China and a
        few hundred from abroad, and a sender waiting on one call at a time sends no faster
        than that. The wait holds no lock, so concurrent calls overlap as they do at WeChat.
        """
        for rate in (errcode_rate, http502_rate, delay_rate, force_40001_rate):
            if not 0.0 <= rate <= 1.0:
                raise ValueError("fault rates are between 0 and 1")
        for name, seconds in (("delay_seconds", delay_seconds), ("latency", latency)):
            if not (math.isfinite(seconds) and seconds >= 0.0):
                raise ValueError(f"{name} is seconds, 0 or more")
        if isinstance(paths, str) or not all(isinstance(p, str) for p in paths):
            raise ValueError("paths is a list of path prefixes")
        with self.lock:
            self._faults = Faults(errcode_rate, http502_rate, delay_rate, delay_seconds,
                                  force_40001_rate, tuple(paths), latency)

    def fail_next(self, path: str, *, errcode: int | None = None,
                  http_status: int | None = None, times: int = 1) -> None:
        """Answer the next ``times`` calls to ``path`` with ``errcode`` or an HTML error page
        of ``http_status``, without running the endpoint."""
        if (errcode is None) == (http_status is None):
            raise ValueError("give errcode or http_status")
        if http_status is not None:
            HTTPStatus(http_status)     # ValueError for a status that does not exist
        with self.lock:
            self._queued.setdefault(path, deque()).extend([(errcode, http_status)] * times)

    def reset(self) -> None:
        """Forget tokens, users, media, codes, calls, sent messages, faults and ``advance``;
        registered apps stay (with fresh state)."""
        with self.lock:
            self._clear()

    def advance(self, seconds: float) -> None:
        """Move the emulator's time forward (also works when it runs in another process)."""
        with self.lock:
            self._offset += seconds

    def login_code(self, appid: str, openid: str) -> str:
        with self.lock:
            return opendata.login_code(self, appid, openid)

    def encrypted_data(self, appid: str, openid: str, data: dict[str, Any]) -> tuple[str, str]:
        with self.lock:
            return opendata.encrypted_data(self, appid, openid, data)

    def raw_signature(self, appid: str, openid: str, raw_data: str) -> str:
        with self.lock:
            return opendata.raw_signature(self, appid, openid, raw_data)

    def cloud_id(self, appid: str, openid: str, data: dict[str, Any]) -> str:
        with self.lock:
            return opendata.cloud_id(self, appid, openid, data)

    def phone_code(self, appid: str, openid: str, phone: str) -> str:
        with self.lock:
            return opendata.phone_code(self, appid, openid, phone)

    def customer_image(self, appid: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """An image a customer sent: the MediaId its push carries, for /cgi-bin/media/get."""
        with self.lock:
            return media.customer_image(self, appid, data, content_type)

    # --- HTTP --------------------------------------------------------------------------------

    def _sink(self, req: falcon.Request, resp: falcon.Response, **_: Any) -> None:
        if req.path == "/_emulator" or req.path.startswith("/_emulator/"):
            status, answer = control.handle(self, req.method, req.path[len("/_emulator"):],
                                            _params(req), req.bounded_stream.read())
            _respond(resp, status, answer)
            return
        request = Request(method=req.method, path=req.path, params=_params(req),
                          base=req.prefix)
        if req.content_type and req.content_type.startswith("multipart/form-data"):
            request.parts = _parts(req)
        else:
            request.body = req.bounded_stream.read()
        status, answer = self.handle(request)
        _respond(resp, status, answer)

    def handle(self, request: Request) -> tuple[int, dict[str, Any] | Raw]:
        """Answer one API request: (HTTP status, JSON object or raw answer). Records it."""
        with self.lock:
            self._in_flight[request.path] += 1
            delay, fault = self._draw_faults(request)
        try:
            if delay:
                self._sleep(delay)
            with self.lock:
                status, answer = fault if fault is not None else self._run(request)
            if isinstance(answer, Later):   # a cloud function: run without the lock
                answer = answer.run()
            with self.lock:
                errcode = answer.get("errcode", 0) if isinstance(answer, dict) else None
                self._calls.append(Call(
                    method=request.method, path=request.path,
                    params={k: v for k, v in request.params.items() if k != "access_token"},
                    body=request.recorded_body(), errcode=errcode, status=status,
                    time=self.now(), appid=self._appid_of(request)))
                return status, answer
        finally:
            with self.lock:
                self._in_flight[request.path] -= 1

    def in_flight(self, path: str) -> int:
        """Requests to ``path`` received and not answered yet (say, held by a delay fault):
        recorded in ``calls`` only once answered."""
        with self.lock:
            return self._in_flight[path]

    def _run(self, request: Request) -> tuple[int, dict[str, Any] | Raw | Later]:
        if request.path.startswith(cloud.STORAGE_PATHS):   # the storage host, not the API
            return cloud.storage(self, request)
        route = ROUTES.get(request.path)
        if route is None:
            return 404, {"errcode": 40066,
                         "errmsg": f"invalid url: {request.path} is not emulated"}
        method, endpoint = route
        try:
            if request.method != method:
                raise Fail(43002 if method == "POST" else 43001)
            return 200, endpoint(self, request)
        except Fail as fail:
            return 200, {"errcode": fail.errcode, "errmsg": fail.errmsg}

    def _draw_faults(self, request: Request) -> tuple[float, tuple[int, Any] | None]:
        """(seconds to wait before answering, the failure to answer or None to run it)."""
        faults = self._faults
        latency = faults.latency if faults.applies(request.path) else 0.0
        queued = self._queued.get(request.path)
        if queued:
            errcode, http_status = queued.popleft()
            if http_status is not None:
                return latency, (http_status, _error_page(http_status))
            return latency, (200, {"errcode": errcode, "errmsg": Fail(errcode).errmsg})
        if not faults.active or not faults.applies(request.path) or request.path not in ROUTES:
            return latency, None
        draw = [self._fault_rng.random() for _ in range(4)]
        delay = latency + (faults.delay_seconds if draw[0] < faults.delay_rate else 0.0)
        if draw[1] < faults.http502_rate:
            return delay, (502, _error_page(502))
        if draw[2] < faults.errcode_rate:
            return delay, (200, {"errcode": -1, "errmsg": "system error"})
        if draw[3] < faults.force_40001_rate and "access_token" in request.params:
            return delay, (200, {"errcode": 40001, "errmsg": Fail(40001).errmsg})
        return delay, None

    def _appid_of(self, request: Request) -> str | None:
        token = request.params.get("access_token")
        record = self.tokens.get(token) if token else None
        if record is not None:
            return record.appid
        appid = request.params.get("appid")
        if appid is None and request.method == "POST":
            try:
                appid = request.json().get("appid")
            except Fail:
                return None
        return appid if isinstance(appid, str) else None


def _error_page(status: int) -> Raw:
    """The HTML a gateway in front of WeChat answers when the API is down."""
    title = f"{status} {HTTPStatus(status).phrase}"
    page = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n")
    return Raw(page.encode("ascii"), "text/html")


def _params(req: falcon.Request) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v[-1] for k, v in req.params.items()}


def _parts(req: falcon.Request) -> dict[str, Part]:
    parts: dict[str, Part] = {}
    try:
        for part in req.get_media():
            parts[part.name] = Part(part.name, part.filename, part.content_type or "",
                                    part.stream.read())
    except falcon.MediaMalformedError:
        return {}
    return parts


def _respond(resp: falcon.Response, status: int, answer: dict[str, Any] | Raw) -> None:
    resp.status = status
    if isinstance(answer, Raw):
        resp.content_type = answer.content_type
        resp.data = answer.data
        for name, value in answer.headers:
            resp.set_header(name, value)
    else:
        resp.content_type = "application/json; charset=utf-8"
        resp.data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
