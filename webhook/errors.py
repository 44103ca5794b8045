"""One exception tree for everything wxpush raises.

::

    WxpushError
    ├── RequestRejected (status, reason)      -> a 4xx with a short plain reason
    │   ├── MalformedRequest          400     missing query parameter, bad body, XML entities
    │   ├── Unauthorized              401     open-data endpoints: unknown session, bad code
    │   ├── BadSignature              403     signature / msg_signature mismatch
    │   ├── StaleTimestamp            403     timestamp outside the window
    │   ├── DecryptError              403     Encrypt does not open to a message for this app
    │   ├── UnknownApp                404     no such appid configured
    │   ├── PayloadTooLarge           413     body over the cap (never read)
    │   └── UnsupportedMediaType      415     a JSON endpoint sent another Content-Type
    ├── WeChatAPIError (errcode, errmsg)       an answer from WeChat's server API
    │   ├── TokenInvalid     40001 40014 42001: invalidate-if-equal, refresh, retry once
    │   ├── Retryable        -1 45011 5xx, timeouts, resets, garbage bodies
    │   │   ├── TimedOut           no answer within the call's timeout
    │   │   └── FunctionTimedOut   -504003: a cloud function cut off at 5 s
    │   └── Permanent        45015 45047 40003 48001 and every other errcode
    │       ├── FunctionFailed     -504002: a cloud function threw, or its result is not JSON
    │       └── CloudNotFound      -501000 85088: no such cloud function or environment
    ├── StoreError                            the store cannot be reached or used
    └── ConfigError (file, line, key)         a bad config or rules file, found at start

No message built here ever contains a token, key, secret, access_token or session_key.
"""

from __future__ import annotations

__all__ = ["WxpushError", "RequestRejected", "MalformedRequest", "Unauthorized", "BadSignature",
           "StaleTimestamp", "DecryptError", "UnknownApp", "PayloadTooLarge",
           "UnsupportedMediaType", "WeChatAPIError", "TokenInvalid", "Retryable", "Permanent",
           "TimedOut", "FunctionTimedOut", "FunctionFailed", "CloudNotFound", "StoreError",
           "ConfigError", "TOKEN_ERRCODES", "RETRYABLE_ERRCODES", "api_error"]


class WxpushError(Exception):
    """Base of every error wxpush raises on purpose."""


class RequestRejected(WxpushError):
    """An inbound request we refuse; ``reason`` is safe to show to the caller, ``detail``
    (if any) is for the operator's log only."""

    status = 400

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class MalformedRequest(RequestRejected):
    status = 400


class Unauthorized(RequestRejected):
    status = 401


class BadSignature(RequestRejected):
    status = 403


class StaleTimestamp(RequestRejected):
    status = 403


class DecryptError(RequestRejected):
    """Bad padding, a message length that does not fit, another app's AppID, a message that
    does not read: one reason for all (crypto.NOT_OPEN), or they would be a padding oracle."""

    status = 403


class UnknownApp(RequestRejected):
    status = 404


class PayloadTooLarge(RequestRejected):
    status = 413


class UnsupportedMediaType(RequestRejected):
    status = 415


class WeChatAPIError(WxpushError):
    """WeChat answered with a non-zero errcode (or not at all, for Retryable)."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"errcode={errcode} errmsg={errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class TokenInvalid(WeChatAPIError):
    """The access_token was refused; the caller refreshes once and retries once."""


class Retryable(WeChatAPIError):
    """Busy, throttled or unreachable: try again later with backoff."""


class Permanent(WeChatAPIError):
    """WeChat will refuse this call again: dead-letter it, never retry."""


class TimedOut(Retryable):
    """WeChat did not answer within the call's timeout."""


class FunctionTimedOut(Retryable):
    """A cloud function did not answer in time: WeChat stops it after 5 s (docs/protocol.md
    §9.1), and wxpush waits no longer than that either."""


class FunctionFailed(Permanent):
    """A cloud function ran and failed; ``errmsg`` is what it failed with."""


class CloudNotFound(Permanent):
    """The cloud environment, or the function in it, does not exist (or cloud development is
    not opened for the app); ``what`` says which, as far as WeChat's errmsg tells."""

    def __init__(self, errcode: int, errmsg: str, *, what: str = "function or environment"
                 ) -> None:
        super().__init__(errcode, errmsg)
        self.what = what


class StoreError(WxpushError):
    """The store cannot be reached or used; names the URL without its password."""


class ConfigError(WxpushError):
    """A bad config or rules file: ``file:line: key: problem`` (``key: problem`` for a value
    that comes from no file, such as a command-line flag)."""

    def __init__(self, problem: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.problem, self.file, self.line, self.key = problem, file, line, key
        where = (file or "") + (f":{line}" if file and line is not None else "")
        super().__init__(f"{where + ': ' if where else ''}{key + ': ' if key else ''}{problem}")


TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
RETRYABLE_ERRCODES = frozenset({-1, -1000, 45011})


def api_error(errcode: int, errmsg: str) -> WeChatAPIError:
    """Map a WeChat errcode to the right branch of the tree."""
    if errcode in TOKEN_ERRCODES:
        return TokenInvalid(errcode, errmsg)
    if errcode in RETRYABLE_ERRCODES:
        return Retryable(errcode, errmsg)
    return Permanent(errcode, errmsg)
