"""The emulator's control plane over HTTP, under ``/_emulator/``, for other processes.

Each route mirrors one ``Emulator`` method (JSON in, JSON out); ``EmulatorControl`` is the
client. Bad input answers 400 ``{"error": ...}``, an unknown route 404.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webhook.testing.emulator.core import Emulator

__all__ = ["handle"]

Action = Callable[["Emulator", dict[str, Any]], Any]


def _register(emu: Emulator, a: dict[str, Any]) -> dict[str, Any]:
    emu.register_app(_str(a, "appid"), _str(a, "secret"))
    return {"ok": True}


def _push(emu: Emulator, a: dict[str, Any]) -> dict[str, Any]:
    fields = a.get("fields")
    if not isinstance(fields, dict):
        raise ValueError("fields must be the push's message fields (an object)")
    emu.notify_push(_str(a, "appid"), fields)
    return {"ok": True}


def _faults(emu: Emulator, a: dict[str, Any]) -> dict[str, Any]:
    rates = {k: float(a.get(k, 0.0)) for k in ("errcode_rate", "http502_rate", "delay_rate",
                                               "delay_seconds", "force_40001_rate", "latency")}
    paths = a.get("paths") or []
    if not isinstance(paths, list):
        raise ValueError("paths is a list of path prefixes")
    emu.set_faults(**rates, paths=tuple(paths))
    return {"ok": True}


def _fail_next(emu: Emulator, a: dict[str, Any]) -> dict[str, Any]:
    emu.fail_next(_str(a, "path"), errcode=a.get("errcode"), http_status=a.get("http_status"),
                  times=int(a.get("times", 1)))
    return {"ok": True}


def _reset(emu: Emulator, a: dict[str, Any]) -> dict[str, Any]:
    emu.reset()
    return {"ok": True}


def _advance(emu: Emulator, a: dict[str, Any]) -> dict[str, Any]:
    emu.advance(float(a.get("seconds", 0)))
    return {"now": emu.now()}


def _cloud_env(emu: Emulator, a: dict[str, Any]) -> dict[str, Any]:
    """A cloud environment with collections (records as objects) and, with ``demo``, the
    demo's functions and collections; functions themselves are Python, in-process only."""
    from webhook.testing.emulator.cloud import DEMO_COLLECTIONS, DEMO_FUNCTIONS

    collections = a.get("collections") or {}
    if not isinstance(collections, dict) or not all(
            isinstance(records, list) and all(isinstance(r, dict) for r in records)
            for records in collections.values()):
        raise ValueError("collections maps names to lists of records (objects)")
    demo = a.get("demo") is True
    emu.add_cloud_env(_str(a, "appid"), _str(a, "env"),
                      functions=DEMO_FUNCTIONS if demo else None,
                      collections={**(DEMO_COLLECTIONS if demo else {}), **collections})
    return {"ok": True}


def _encrypted_data(emu: Emulator, a: dict[str, Any]) -> dict[str, Any]:
    data, iv = emu.encrypted_data(_str(a, "appid"), _str(a, "openid"), _obj(a, "data"))
    return {"encryptedData": data, "iv": iv}


_POST: dict[str, Action] = {
    "/apps": _register,
    "/push": _push,
    "/faults": _faults,
    "/fail_next": _fail_next,
    "/reset": _reset,
    "/advance": _advance,
    "/login_code": lambda emu, a: {"code": emu.login_code(_str(a, "appid"), _str(a, "openid"))},
    "/encrypted_data": _encrypted_data,
    "/cloud_env": _cloud_env,
    "/raw_signature": lambda emu, a: {"signature": emu.raw_signature(
        _str(a, "appid"), _str(a, "openid"), _str(a, "raw_data"))},
    "/cloud_id": lambda emu, a: {"cloud_id": emu.cloud_id(
        _str(a, "appid"), _str(a, "openid"), _obj(a, "data"))},
    "/phone_code": lambda emu, a: {"code": emu.phone_code(
        _str(a, "appid"), _str(a, "openid"), _str(a, "phone"))},
}

_GET: dict[str, Action] = {
    "": lambda emu, a: {"ok": True, "now": emu.now()},
    "/calls": lambda emu, a: {"calls": [c.to_json() for c in emu.calls(
        a.get("path"), appid=a.get("appid"))]},
    "/sent": lambda emu, a: {"sent": [{"appid": s[0], "touser": s[1], "payload": s[2]}
                                      for s in emu.sent(a.get("appid"))]},
    "/token_fetches": lambda emu, a: emu.token_fetches(_str(a, "appid")),
}


def handle(emu: Emulator, method: str, path: str, params: dict[str, str],
           body: bytes) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON answer) for one control request; ``path`` is after ``/_emulator``."""
    path = path.rstrip("/")
    table = _POST if method == "POST" else _GET if method == "GET" else {}
    action = table.get(path)
    if action is None:
        return 404, {"error": f"no control route {method} /_emulator{path}"}
    try:
        args = dict(params)
        if body.strip():
            loaded = json.loads(body)
            if not isinstance(loaded, dict):
                raise ValueError("the body must be a JSON object")
            args.update(loaded)
        return 200, action(emu, args)
    except (ValueError, TypeError) as exc:
        return 400, {"error": str(exc)}


def _str(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is required (a non-empty string)")
    return value


def _obj(args: dict[str, Any], key: str) -> dict[str, Any]:
    value = args.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{key} is required (an object)")
    return value
