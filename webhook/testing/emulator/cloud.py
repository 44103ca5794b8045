"""Cloud functions and cloud storage (docs/protocol.md §9.1, §9.3-9.5), and the demo's set.

A function is a Python callable taking the event (the POST body) and returning something
JSON can write; it runs outside the emulator's lock, and is cut off after
``Emulator.function_limit`` seconds (5, as WeChat does: -504003). One that raises answers
-504002 with its error; one that returns ``RawResult(text)`` answers that text as resp_data.

Storage keeps files by path. An upload is two steps as at WeChat: ``uploadfile`` hands out a
signed URL of the emulator's storage (``/cos/<bucket>/<path>``), which takes a form whose
``file`` part must come last (MalformedPOSTRequest otherwise, as COS answers). Download links
(``/tcb-download/...``) work until their ``max_age`` runs out on the emulator's clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from webhook.testing.emulator.database import cloud_env
from webhook.testing.emulator.state import CloudEnv, CloudFile, Fail, Later, Raw, Request

if TYPE_CHECKING:
    from webhook.testing.emulator.core import Emulator

__all__ = ["CloudControl", "RawResult", "FUNCTION_LIMIT", "DEMO_FUNCTIONS", "DEMO_COLLECTIONS", "invoke",
           "uploadfile", "batchdownloadfile", "batchdeletefile", "storage", "STORAGE_PATHS"]

STORAGE_PATHS = ("/cos/", "/tcb-download/")
FUNCTION_LIMIT = 5.0
FILE_MISSING = -1
_SIGNING = b"wxpush-emulator-storage"


@dataclass(frozen=True, slots=True)
class RawResult:
    """A function result answered as ``resp_data`` exactly, JSON or not."""

    text: str


class CloudControl:
    """The Emulator's methods that set up and inspect cloud environments (kept by ``reset``,
    as apps are)."""

    lock: threading.RLock
    cloud_envs: dict[str, CloudEnv]

    def add_cloud_env(self: Emulator, appid: str, env: str, *,
                      functions: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
                      collections: Mapping[str, list[dict[str, Any]]] | None = None) -> None:
        """Give ``appid`` the cloud environment ``env`` with these functions and collections
        (records copied; each needs no ``_id``). ``DEMO_FUNCTIONS`` and ``DEMO_COLLECTIONS``
        are the demo's."""
        with self.lock:
            self.app_state(appid)
            found = self.cloud_envs.setdefault(env, CloudEnv(env, appid))
            if found.appid != appid:
                raise ValueError(f"cloud environment {env!r} belongs to {found.appid}")
            found.functions.update(functions or {})
            for name, records in (collections or {}).items():
                found.collections[name] = [dict(r, _id=r.get("_id") or self.new_id(32))
                                           for r in records]

    def collection(self, env: str, name: str) -> list[dict[str, Any]]:
        """A copy of the records of a collection, as they are now."""
        with self.lock:
            return [json.loads(json.dumps(r)) for r in self.cloud_envs[env].collections[name]]

    def put_file(self: Emulator, env: str, path: str, data: bytes) -> str:
        """Store a file in ``env`` directly (no upload); its file ID."""
        with self.lock:
            found = self.cloud_envs[env]
            found.files[path] = CloudFile(data, self.now())
            return found.file_id(path)

    def cloud_file(self, env: str, path: str) -> bytes | None:
        with self.lock:
            stored = self.cloud_envs[env].files.get(path)
            return None if stored is None else stored.data


# -- the demo's cloud: an order lookup and a FAQ collection ----------------------------------

def order_status(event: dict[str, Any]) -> dict[str, Any]:
    """``orderStatus``: {order} -> {order, status, eta}; an order ending in 0 is unknown."""
    order = str(event.get("order", ""))
    if not order.isdigit():
        raise ValueError("order must be digits")
    if order.endswith("0"):
        raise LookupError(f"no order {order}")
    shipped = int(order) % 2 == 1
    return {"order": order, "status": "已发货" if shipped else "备货中",
            "eta": "明天" if shipped else "3 天内"}


DEMO_FUNCTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {"orderStatus": order_status}
DEMO_COLLECTIONS: dict[str, list[dict[str, Any]]] = {"faq": [
    {"_id": "faq-shipping", "key": "shipping", "answer": "满 99 元包邮，不满收 8 元运费。"},
    {"_id": "faq-returns", "key": "returns", "answer": "收货 7 天内可无理由退货。"},
]}


# -- functions ------------------------------------------------------------------------------

def invoke(emu: Emulator, req: Request) -> Later:
    """POST /tcb/invokecloudfunction?env=&name= with the event as the body"""
    env = cloud_env(emu, req, req.params.get("env"))
    name = req.params.get("name")
    if not name:
        raise Fail(40101, "missing parameter name")
    function = env.functions.get(name)
    if function is None:
        raise Fail(-501000, f"FunctionName parameter could not be found: {name}")
    event = req.json()
    return Later(lambda: _run(function, event, name, emu.function_limit))


def _run(function: Callable[[dict[str, Any]], Any], event: dict[str, Any], name: str,
         limit: float) -> dict[str, Any]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = function(event)
        except Exception as exc:   # the function's own failure, answered as WeChat does
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"cloud-function-{name}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        return {"errcode": -504003, "errmsg": f"Invoking task timed out after {limit:g} seconds"}
    if "error" in outcome:
        error = outcome["error"]
        return {"errcode": -504002,
                "errmsg": f"functions execute fail: {type(error).__name__}: {error}"}
    result = outcome.get("result")
    if isinstance(result, RawResult):
        return {"errcode": 0, "errmsg": "ok", "resp_data": result.text}
    try:
        text = json.dumps(result, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return {"errcode": -504002, "errmsg": f"functions execute fail: {exc}"}
    return {"errcode": 0, "errmsg": "ok", "resp_data": text}


# -- storage --------------------------------------------------------------------------------

def uploadfile(emu: Emulator, req: Request) -> dict[str, Any]:
    """POST /tcb/uploadfile {env, path}: where and how to send the file"""
    body = req.json()
    env = cloud_env(emu, req, body.get("env"))
    path = body.get("path")
    if not isinstance(path, str) or not path or path.startswith("/"):
        raise Fail(40097, "path must be a relative file path")
    upload = {"path": path, "token": emu.new_id(40), "cos_file_id": emu.new_id(24),
              "authorization": f"q-sign-algorithm=sha1&q-ak=AKIDemulator&q-signature="
                               f"{emu.new_id(40)}"}
    env.uploads[path] = upload
    return {"errcode": 0, "errmsg": "ok", "url": f"{req.base}/cos/{env.bucket}/{quote(path)}",
            "token": upload["token"], "authorization": upload["authorization"],
            "file_id": env.file_id(path), "cos_file_id": upload["cos_file_id"]}


def _listed(emu: Emulator, req: Request, key: str) -> tuple[CloudEnv, list[Any]]:
    """The call's environment and its non-empty list ``key`` (40101 without one)."""
    body = req.json()
    env = cloud_env(emu, req, body.get("env"))
    items = body.get(key)
    if not isinstance(items, list) or not items:
        raise Fail(40101, f"missing parameter {key}")
    return env, items


def batchdownloadfile(emu: Emulator, req: Request) -> dict[str, Any]:
    """POST /tcb/batchdownloadfile {env, file_list: [{fileid, max_age}]}"""
    env, items = _listed(emu, req, "file_list")
    answers = []
    for item in items:
        fileid = item.get("fileid") if isinstance(item, dict) else None
        max_age = item.get("max_age") if isinstance(item, dict) else None
        if not isinstance(max_age, int) or isinstance(max_age, bool) or max_age <= 0:
            raise Fail(40097, "each file needs max_age, in seconds")
        path = _path_of(env, fileid)
        if path is None or path not in env.files:
            answers.append({"fileid": fileid, "download_url": "", "status": FILE_MISSING,
                            "errmsg": "file not exist"})
            continue
        until = int(emu.now()) + max_age
        answers.append({"fileid": fileid, "status": 0, "errmsg": "ok",
                        "download_url": f"{req.base}/tcb-download/{env.bucket}/{quote(path)}"
                                        f"?t={until}&sign={_sign(env.bucket, path, until)}"})
    return {"errcode": 0, "errmsg": "ok", "file_list": answers}


def batchdeletefile(emu: Emulator, req: Request) -> dict[str, Any]:
    """POST /tcb/batchdeletefile {env, fileid_list}"""
    env, ids = _listed(emu, req, "fileid_list")
    answers = []
    for fileid in ids:
        path = _path_of(env, fileid)
        found = path is not None and env.files.pop(path, None) is not None
        answers.append({"fileid": fileid, "status": 0 if found else FILE_MISSING,
                        "errmsg": "ok" if found else "file not exist"})
    return {"errcode": 0, "errmsg": "ok", "delete_list": answers}


def storage(emu: Emulator, req: Request) -> tuple[int, Raw]:
    """The storage host: POST /cos/<bucket>/<path> (step 2 of an upload) and
    GET /tcb-download/<bucket>/<path>?t=&sign= (a download link)."""
    kind, _, rest = req.path.strip("/").partition("/")
    bucket, _, quoted = rest.partition("/")
    path = unquote(quoted)
    env = next((e for e in emu.cloud_envs.values() if e.bucket == bucket), None)
    if kind == "cos" and req.method == "POST" and env is not None:
        return _receive(emu, env, path, req)
    if kind == "tcb-download" and req.method == "GET" and env is not None:
        until = req.params.get("t", "")
        if not until.isdigit() or not hmac.compare_digest(
                req.params.get("sign", ""), _sign(bucket, path, int(until))):
            return 403, _cos_error("AccessDenied", "Access Denied.")
        if emu.now() > int(until):
            return 403, _cos_error("AccessDenied", "Request has expired")
        stored = env.files.get(path)
        if stored is None:
            return 404, _cos_error("NoSuchKey", "The specified key does not exist.")
        kind_of = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return 200, Raw(stored.data, kind_of)
    return 404, _cos_error("NoSuchBucket", "The specified bucket does not exist.")


def _receive(emu: Emulator, env: CloudEnv, path: str, req: Request) -> tuple[int, Raw]:
    parts = req.parts
    if not parts or list(parts)[-1] != "file":
        return 400, _cos_error("MalformedPOSTRequest", "The body of your POST request is not "
                               "well-formed multipart/form-data.")
    upload = env.uploads.get(path)
    given = {name: parts[name].data.decode("utf-8", "replace") if name in parts else None
             for name in ("key", "Signature", "x-cos-security-token", "x-cos-meta-fileid")}
    if upload is None or given != {"key": path, "Signature": upload["authorization"],
                                   "x-cos-security-token": upload["token"],
                                   "x-cos-meta-fileid": upload["cos_file_id"]}:
        return 403, _cos_error("AccessDenied", "Access Denied.")
    del env.uploads[path]
    env.files[path] = CloudFile(parts["file"].data, emu.now())
    return 204, Raw(b"", "text/plain")


def _path_of(env: CloudEnv, fileid: Any) -> str | None:
    prefix = env.file_id("")
    if isinstance(fileid, str) and fileid.startswith(prefix) and len(fileid) > len(prefix):
        return fileid[len(prefix):]
    return None


def _sign(bucket: str, path: str, until: int) -> str:
    return hmac.new(_SIGNING, f"{bucket}/{path}:{until}".encode(), hashlib.sha256).hexdigest()[:32]


def _cos_error(code: str, message: str) -> Raw:
    return Raw(f"<?xml version='1.0' encoding='utf-8' ?>\n<Error><Code>{code}</Code>"
               f"<Message>{message}</Message></Error>".encode(), "application/xml")
