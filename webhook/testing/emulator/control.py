"""The emulator's control plane over HTTP, under ``/_emulator/``, for other processes: a test,
``wxpush push --emulator`` or a demo drives an emulator running elsewhere with it.

Each route mirrors one ``Emulator`` method; ``EmulatorControl`` is the client. Arguments
come as a JSON object body (or query parameters), answers are JSON; bad input answers 400
``{"error": ...}``, an unknown route 404 with the list below (``wxpush emulator`` prints it
at start):

    GET  /_emulator                  {} -> {ok, now}: is it up, and its clock
    POST /_emulator/apps             {appid, secret}: make an app known (or change its secret)
    POST /_emulator/push             {appid, fields}: WeChat saw this push (fields as sent):
                                     learn the customer, open their send window
    GET  /_emulator/calls            {path?, appid?} -> {calls}: the API calls made, oldest first
    GET  /_emulator/sent             {appid?} -> {sent: [{appid, touser, payload}]}: messages
                                     custom/send accepted
    GET  /_emulator/token_fetches    {appid} -> {token, stable_token, ...}: tokens handed out
    POST /_emulator/faults           {errcode_rate, http502_rate, delay_rate, delay_seconds,
                                     force_40001_rate, latency, paths}: random failures
    POST /_emulator/fail_next        {path, errcode | http_status, times}: fail the next calls
    POST /_emulator/reset            {}: forget tokens, users, calls, sent messages, faults
    POST /_emulator/advance          {seconds} -> {now}: move the emulator's clock forward
    POST /_emulator/login_code       {appid, openid} -> {code}: a wx.login() code
    POST /_emulator/encrypted_data   {appid, openid, data} -> {encryptedData, iv}: open data
                                     sealed with the session_key of the customer's login_code
    POST /_emulator/raw_signature    {appid, openid, raw_data} -> {signature}: of rawData,
                                     with that session_key
    POST /_emulator/cloud_id         {appid, openid, data} -> {cloud_id}: a cloudID of data
    POST /_emulator/phone_code       {appid, openid, phone} -> {code}: a getPhoneNumber code
                                     (phone "13800138000", or "+1 2025550123")
    POST /_emulator/cloud_env        {appid, env, collections?, demo?}: a cloud environment
                                     (collections: name -> records; demo: the demo's
                                     orderStatus function and faq collection too)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webhook.testing.emulator.core import Emulator

__all__ = ["handle", "routes"]

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


def routes() -> list[str]:
    """The routes as this module's docstring lists them (one place to keep them), one line
    each with its arguments and what it does."""
    listed: list[str] = []
    for line in (__doc__ or "").splitlines():
        text = " ".join(line.split())
        if text.startswith(("GET /_emulator", "POST /_emulator")):
            listed.append(text)
        elif listed and line.startswith(" " * 8) and text:    # a description's next line
            listed[-1] += " " + text
    return listed


def handle(emu: Emulator, method: str, path: str, params: dict[str, str],
           body: bytes) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON answer) for one control request; ``path`` is after ``/_emulator``."""
    path = path.rstrip("/")
    table = _POST if method == "POST" else _GET if method == "GET" else {}
    action = table.get(path)
    if action is None:
        known = [f"{m} /_emulator{p}" for m, t in (("GET", _GET), ("POST", _POST)) for p in t]
        return 404, {"error": f"no control route {method} /_emulator{path}; the routes: "
                              f"{', '.join(known)}", "routes": routes()}
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
