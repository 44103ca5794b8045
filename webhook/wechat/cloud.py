"""Cloud development for the configured apps (docs/protocol.md §9): cloud functions, the cloud
database and cloud storage, each call with the app's shared access_token in its ``cloud_env``.

Every call takes the appid; ``env`` overrides the app's ``cloud_env``. Errors are the
WeChatAPIError tree, with cloud functions' own: ``FunctionTimedOut`` (WeChat stops a
function after 5 s), ``FunctionFailed`` (it threw, or its result is not JSON) and
``CloudNotFound`` (no such function or environment).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from webhook.cloudquery import ACTIONS, Statement
from webhook.errors import (CloudNotFound, ConfigError, FunctionFailed, FunctionTimedOut,
                            Permanent, Retryable, TimedOut, WeChatAPIError)
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

__all__ = ["Cloud", "DownloadLink", "Updated", "database_result",
           "LINK_LIFETIME", "MAX_FILES", "FUNCTION_LIMIT"]

log = logging.getLogger(__name__)
FUNCTION_LIMIT = 5.0        # WeChat stops a function called over HTTP after 5 s (§9.1)
LINK_LIFETIME = 7200        # seconds a download link is asked to live (max_age, §9.4)
MAX_FILES = 50              # files per batchdownloadfile call (§9.4)
# Errcodes of the cloud APIs (docs/protocol.md §9.6)
FUNCTION_FAILED, FUNCTION_TIMEOUT = -504002, -504003
NOT_FOUND, NOT_OPENED = -501000, 85088


@dataclass(frozen=True, slots=True)
class DownloadLink:
    """A temporary download URL of one file (``status`` 0), or why there is none."""

    fileid: str
    url: str
    status: int
    errmsg: str


@dataclass(frozen=True, slots=True)
class Updated:
    matched: int
    modified: int


class Cloud:
    """``client`` and ``tokens`` as for ``WeChatAPI``; ``function_wait``: how long to wait for
    a function's answer (WeChat's 5 s and a margin for the way there and back);
    ``upload_timeout`` bounds the second step of an upload (the file's bytes to storage)."""

    def __init__(self, client: WeChatClient, tokens: TokenProvider, *,
                 function_wait: float = FUNCTION_LIMIT + 2.0,
                 upload_timeout: tuple[float, float] = (3.05, 60)) -> None:
        self.client, self.tokens = client, tokens
        self.function_wait, self.upload_timeout = function_wait, upload_timeout

    # -- functions ------------------------------------------------------------------------
    def call_function(self, appid: str, name: str, data: Mapping[str, Any] | None = None, *,
                      env: str | None = None) -> Any:
        """Run cloud function ``name`` with ``data`` as its event; its return value, parsed.

        WeChat answers the result as a JSON string (``resp_data``). The call waits a little
        longer than WeChat's 5 s for the function, then gives up (FunctionTimedOut)."""
        event = json.dumps(dict(data or {}), ensure_ascii=False,
                           separators=(",", ":")).encode("utf-8")
        params = {"env": self._env(appid, env), "name": name}
        wait = (self.client.timeout[0], self.function_wait)

        def invoke(token: str) -> dict[str, Any]:
            try:
                return self.client.tcb("invokecloudfunction", access_token=token, raw=event,
                                       params=params, timeout=wait)
            except TimedOut:   # the function's call, not a token fetch before it
                raise FunctionTimedOut(FUNCTION_TIMEOUT, f"function {name} gave no answer "
                                       f"within {FUNCTION_LIMIT:.0f} s") from None

        body = self._call(appid, invoke)
        result = body.get("resp_data")
        if not isinstance(result, str):
            raise FunctionFailed(-1, f"function {name}: the answer has no resp_data")
        try:
            return json.loads(result)
        except ValueError:
            raise FunctionFailed(-1, f"function {name}: its result is not JSON") from None

    # -- database -------------------------------------------------------------------------
    def database(self, appid: str, statement: Statement, *, env: str | None = None) -> Any:
        """Run ``statement`` (``webhook.cloudquery``); ``database_result`` says what comes back
        for each kind."""
        if statement.action not in ACTIONS.values():
            raise ValueError(f"not a database API: {statement.action}")
        body = self._call(appid, lambda token: self.client.tcb(
            statement.action, access_token=token,
            payload={"env": self._env(appid, env), "query": statement.text}))
        return database_result(statement.action, body)

    # -- storage --------------------------------------------------------------------------
    def upload(self, appid: str, path: str, data: bytes, *, env: str | None = None) -> str:
        """Store ``data`` at ``path``; the file's ID (``cloud://...``), its lasting name.

        Two steps (§9.3): WeChat hands out a signed storage URL, then the bytes go there as
        a form whose ``file`` part comes last (storage refuses it otherwise)."""
        target = self._call(appid, lambda token: self.client.tcb(
            "uploadfile", access_token=token, payload={"env": self._env(appid, env),
                                                       "path": path}))
        fields = {name: target.get(name) for name in
                  ("url", "token", "authorization", "file_id", "cos_file_id")}
        if not all(isinstance(value, str) and value for value in fields.values()):
            raise Retryable(-1, "uploadfile answer lacks url, token, authorization, file_id "
                                "or cos_file_id")
        form = [("key", (None, path)), ("Signature", (None, fields["authorization"])),
                ("x-cos-security-token", (None, fields["token"])),
                ("x-cos-meta-fileid", (None, fields["cos_file_id"])),
                ("file", (path.rpartition("/")[2] or "file", data))]
        self._store(fields["url"], form)
        log.info("cloud file uploaded appid=%s bytes=%d", appid, len(data))
        return fields["file_id"]

    def download_links(self, appid: str, file_ids: Iterable[str], *,
                       max_age: int = LINK_LIFETIME, env: str | None = None
                       ) -> list[DownloadLink]:
        """A temporary URL for each file, valid ``max_age`` seconds, in the order asked."""
        links = []
        for batch in _batches(list(file_ids)):
            body = self._call(appid, lambda token, batch=batch: self.client.tcb(
                "batchdownloadfile", access_token=token, payload={
                    "env": self._env(appid, env),
                    "file_list": [{"fileid": fid, "max_age": max_age} for fid in batch]}))
            for item in _list(body, "file_list"):
                item = item if isinstance(item, dict) else {}
                links.append(DownloadLink(str(item.get("fileid", "")),
                                          str(item.get("download_url") or ""),
                                          _status(item), str(item.get("errmsg", ""))[:200]))
        return links

    # -- shared ---------------------------------------------------------------------------
    def _env(self, appid: str, env: str | None) -> str:
        found = env or self.tokens.app(appid).cloud_env
        if not found:
            raise ConfigError(f"app {appid} has no cloud_env: set it in its [[apps]] table",
                              key="cloud_env")
        return found

    def _call(self, appid: str, fn: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        try:
            return self.tokens.call(appid, fn)
        except WeChatAPIError as exc:
            raise _cloud_error(exc) from None

    def _store(self, url: str, form: list[tuple[str, Any]]) -> None:
        """The second step of an upload: the form to storage (not WeChat's API host)."""
        try:
            response = self.client.session.post(
                url, files=form, timeout=self.upload_timeout,
                proxies=requests.utils.get_environ_proxies(url))
        except requests.RequestException as exc:
            # requests' text names the URL, which carries no credential, but keep it short
            raise Retryable(-1, f"storage upload failed: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise Retryable(response.status_code, f"storage upload: HTTP {response.status_code}")
        if response.status_code >= 300:
            raise Permanent(response.status_code, f"storage refused the upload: HTTP "
                                                  f"{response.status_code}")


def database_result(action: str, body: Mapping[str, Any]) -> Any:
    """What a database API's answer holds (docs/protocol.md §9.2): the records of
    databasequery (each sent as a JSON string), the count of databasecount, the ``_id``s of
    databaseadd, Updated for databaseupdate, the number deleted by databasedelete."""
    if action == "databasequery":
        records = []
        for raw in _list(body, "data"):
            try:
                record = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise Retryable(-1, "databasequery answered a record that is not an object")
            records.append(record)
        return records
    if action == "databasecount":
        return _int(body, "count")
    if action == "databaseadd":
        return [str(item) for item in _list(body, "id_list")]
    if action == "databaseupdate":
        return Updated(_int(body, "matched"), _int(body, "modified"))
    if action == "databasedelete":
        return _int(body, "deleted")
    raise ValueError(f"not a database API: {action}")


def _cloud_error(exc: WeChatAPIError) -> WeChatAPIError:
    """WeChat's cloud errcodes as the cloud branches of the error tree."""
    if exc.errcode == FUNCTION_TIMEOUT:
        return FunctionTimedOut(exc.errcode, exc.errmsg)
    if exc.errcode == FUNCTION_FAILED:
        return FunctionFailed(exc.errcode, exc.errmsg)
    if exc.errcode in (NOT_FOUND, NOT_OPENED):
        text = exc.errmsg.lower()
        what = ("environment" if exc.errcode == NOT_OPENED or "environment" in text
                or "环境" in text else
                "function" if "function" in text or "函数" in text else "function or environment")
        return CloudNotFound(exc.errcode, exc.errmsg, what=what)
    return exc


def _batches(items: list[str]) -> list[list[str]]:
    if not items or not all(isinstance(item, str) and item for item in items):
        raise ValueError("give one or more file IDs")
    return [items[i:i + MAX_FILES] for i in range(0, len(items), MAX_FILES)]


def _list(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list):
        raise Retryable(-1, f"the answer has no {key} list")
    return value


def _int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Retryable(-1, f"the answer has no {key} number")
    return value


def _status(item: Mapping[str, Any]) -> int:
    status = item.get("status", 0)
    return status if isinstance(status, int) and not isinstance(status, bool) else -1
