"""The emulator's state: recorded calls, issued tokens, users, media, codes, faults.

Plain mutable records; every read and write happens under ``Emulator.lock``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Call", "Fail", "Raw", "Part", "Request", "TokenRecord", "AppState", "UserState",
           "MediaItem", "Grant", "Faults", "CloudEnv", "CloudFile", "Later", "ERRMSG"]

# errmsg as WeChat returns them (docs/protocol.md §5.5, §6, §7); codes the emulator can answer.
ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40004: "invalid media type",
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid appid",
    40029: "invalid code",
    40066: "invalid url",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41005: "media data missing",
    41008: "missing code",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    44002: "empty post data",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    45072: "command invalid",
    45080: "need sending message to user or recving message from user in the last 30 seconds "
           "before typing",
    45081: "you are already typing",
    47001: "data format error",
    40101: "missing parameter",
    -501000: "Environment not found",
    -502005: "database collection not exists",
}


class Fail(Exception):
    """Raised by an endpoint to answer ``{"errcode": errcode, "errmsg": ...}`` (HTTP 200)."""

    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.errmsg = errmsg or ERRMSG.get(errcode, "error")


@dataclass(frozen=True, slots=True)
class Raw:
    """A non-JSON answer (``/cgi-bin/media/get`` bytes, the 502 page)."""

    data: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Part:
    """One multipart/form-data part."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass(slots=True)
class Request:
    """One API call as the endpoints see it (access_token still in ``params``)."""

    method: str
    path: str
    params: dict[str, str]
    body: bytes = b""
    parts: dict[str, Part] = field(default_factory=dict)   # in the order they came
    base: str = ""     # scheme and host the call came to, for URLs handed out

    def json(self) -> dict[str, Any]:
        """The JSON object body: 44002 when empty, 47001 when not a JSON object."""
        if not self.body.strip():
            raise Fail(44002)
        try:
            value = json.loads(self.body)
        except ValueError:
            raise Fail(47001) from None
        if not isinstance(value, dict):
            raise Fail(47001)
        return value

    def recorded_body(self) -> Any:
        """What a Call keeps of the body: parsed JSON, a multipart summary, or raw text."""
        if self.parts:
            return {name: {"filename": p.filename, "content_type": p.content_type,
                           "size": len(p.data)} for name, p in self.parts.items()}
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded request. ``params`` never contains the access_token; ``errcode`` is None
    for non-JSON answers (media bytes, HTTP 502)."""

    method: str
    path: str
    params: dict[str, str]
    body: Any
    errcode: int | None
    status: int
    time: float
    appid: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "params": self.params,
                "body": self.body, "errcode": self.errcode, "status": self.status,
                "time": self.time, "appid": self.appid}


@dataclass(slots=True)
class TokenRecord:
    """An issued access_token: refused after ``valid_until`` (40001) or ``expires_at`` (42001)."""

    appid: str
    kind: str                 # "token" | "stable_token"
    issued_at: float
    expires_at: float
    valid_until: float        # lowered when a newer token replaces this one


@dataclass(slots=True)
class UserState:
    """What WeChat knows about one user of one app: the customer-service windows."""

    message_at: float | None = None     # last user message: 5 sends within 48 h
    message_used: int = 0
    enter_at: float | None = None       # last user_enter_tempsession: 2 sends within 1 min
    enter_used: int = 0
    exchange_at: float | None = None    # last message either way (typing needs one in 30 s)
    typing_until: float | None = None
    session_key: str | None = None      # base64 of 16 bytes, rotated by each login_code


@dataclass(slots=True)
class AppState:
    appid: str
    secret: str
    users: dict[str, UserState] = field(default_factory=dict)
    token: str | None = None             # current /cgi-bin/token token
    token_prev: str | None = None        # the one before: valid 5 min after the rotation
    stable: str | None = None            # current /cgi-bin/stable_token token
    stable_prev: str | None = None
    forced: deque[float] = field(default_factory=deque)   # force_refresh times, last 24 h
    fetches: dict[str, int] = field(default_factory=lambda: {
        "token": 0, "stable_token": 0, "stable_issued": 0, "forced": 0})


@dataclass(frozen=True, slots=True)
class MediaItem:
    appid: str
    data: bytes
    content_type: str
    filename: str
    created_at: float


@dataclass(slots=True)
class Grant:
    """A login code, phone code or cloudID: bound to (appid, openid), short-lived."""

    appid: str
    openid: str
    expires_at: float
    kind: str                  # "login" | "phone" | "cloud"
    data: Any = None           # phone number / cloud data / the login's session_key
    used: bool = False


@dataclass(slots=True)
class CloudFile:
    data: bytes
    created_at: float


@dataclass(slots=True)
class CloudEnv:
    """One cloud development environment of an app: functions (Python callables taking the
    event), collections of records, stored files by path, uploads begun and not finished."""

    env: str
    appid: str
    functions: dict[str, Callable[[dict[str, Any]], Any]] = field(default_factory=dict)
    collections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    files: dict[str, CloudFile] = field(default_factory=dict)
    uploads: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        """The storage bucket as file IDs name it: the hex of the env's first two letters,
        then the env (``7465-test2-4a89da`` for ``test2-4a89da``, docs/protocol.md §9.4)."""
        return f"{self.env[:2].encode().hex()}-{self.env}"

    def file_id(self, path: str) -> str:
        return f"cloud://{self.env}.{self.bucket}/{path}"


@dataclass(frozen=True, slots=True)
class Later:
    """An answer to compute outside the emulator's lock (a cloud function may run 5 s)."""

    run: Callable[[], dict[str, Any]]


@dataclass(slots=True)
class Faults:
    """Injected failures, drawn per API call from a seeded random in this order."""

    errcode_rate: float = 0.0
    http502_rate: float = 0.0
    delay_rate: float = 0.0
    delay_seconds: float = 0.0
    force_40001_rate: float = 0.0
    paths: tuple[str, ...] = ()          # path prefixes faults apply to; empty = every API path
    latency: float = 0.0                 # seconds added to every answer of those paths

    def applies(self, path: str) -> bool:
        return not self.paths or path.startswith(self.paths)

    @property
    def active(self) -> bool:
        return any((self.errcode_rate, self.http502_rate, self.delay_rate,
                    self.force_40001_rate))
