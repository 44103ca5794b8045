"""Login and open data (docs/protocol.md §7): js_code login, encryptedData, cloudID, phone codes.

``login_code`` plays ``wx.login``: it rotates the user's session_key and issues a single-use
code valid 5 minutes that ``jscode2session`` trades for (openid, session_key). Open data is
encrypted with the user's *current* session_key (AES-128-CBC, PKCS#7, watermark {appid,
timestamp}). cloudIDs live 5 minutes; phone codes are single-use and live 5 minutes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Any

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from webhook.testing.emulator.state import Fail, Grant, Request, UserState
from webhook.testing.emulator.tokens import authorize

if TYPE_CHECKING:
    from webhook.testing.emulator.core import Emulator

__all__ = ["CODE_TTL", "login_code", "encrypted_data", "raw_signature", "cloud_id", "phone_code",
           "jscode2session", "getopendata", "getuserphonenumber"]

CODE_TTL = 300
CLOUD_ID_EXPIRED = {"errCode": -601006, "errMsg": "cloudID expired."}


# --- control plane (called under the emulator lock) -----------------------------------------

def login_code(emu: Emulator, appid: str, openid: str) -> str:
    user = emu.app_state(appid).users.setdefault(openid, UserState())
    user.session_key = base64.b64encode(emu.rng.randbytes(16)).decode("ascii")
    return _grant(emu, appid, openid, "login", user.session_key)


def encrypted_data(emu: Emulator, appid: str, openid: str,
                   data: dict[str, Any]) -> tuple[str, str]:
    """(encryptedData, iv), both base64, as ``wx.getUserProfile`` & co. hand them out."""
    key = base64.b64decode(_session_key(emu, appid, openid))
    iv = emu.rng.randbytes(16)
    plain = json.dumps(_watermarked(emu, appid, data), ensure_ascii=False).encode("utf-8")
    sealed = AES.new(key, AES.MODE_CBC, iv).encrypt(pad(plain, 16))
    return base64.b64encode(sealed).decode("ascii"), base64.b64encode(iv).decode("ascii")


def raw_signature(emu: Emulator, appid: str, openid: str, raw_data: str) -> str:
    """sha1(rawData + session_key): the ``signature`` next to ``rawData``."""
    session_key = _session_key(emu, appid, openid)
    return hashlib.sha1((raw_data + session_key).encode("utf-8")).hexdigest()


def cloud_id(emu: Emulator, appid: str, openid: str, data: dict[str, Any]) -> str:
    emu.app_state(appid)
    return _grant(emu, appid, openid, "cloud", _watermarked(emu, appid, data))


def phone_code(emu: Emulator, appid: str, openid: str, phone: str) -> str:
    """``phone`` is "13800138000" (country code 86) or "+CC NUMBER" ("+1 2025550123")."""
    emu.app_state(appid)
    cc, number = ("86", phone) if not phone.startswith("+") else phone[1:].partition(" ")[::2]
    if not (cc.isdigit() and number.isdigit()):
        raise ValueError('phone must be digits or "+CC DIGITS"')
    return _grant(emu, appid, openid, "phone", (cc, number))


# --- API endpoints -------------------------------------------------------------------------

def jscode2session(emu: Emulator, req: Request) -> dict[str, Any]:
    """GET /sns/jscode2session?appid=&secret=&js_code=&grant_type=authorization_code"""
    p = req.params
    if p.get("grant_type") != "authorization_code":
        raise Fail(40002)
    app = emu.apps.get(p.get("appid", ""))
    if app is None:
        raise Fail(40013)
    if p.get("secret") != app.secret:
        raise Fail(40125)
    grant = _redeem(emu, app.appid, p.get("js_code"), "login")
    return {"openid": grant.openid, "session_key": grant.data}


def getopendata(emu: Emulator, req: Request) -> dict[str, Any]:
    """POST /wxa/getopendata[?openid=] {"cloudid_list": [...]}; per-id expiry -601006"""
    app = authorize(emu, req)
    ids = req.json().get("cloudid_list")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise Fail(47001)
    openid, now = req.params.get("openid"), emu.now()
    items = []
    for cid in ids:
        grant = emu.grants.get(cid)
        fresh = (grant is not None and grant.kind == "cloud" and grant.appid == app.appid
                 and now < grant.expires_at and openid in (None, grant.openid))
        doc = {"cloudID": cid, "data": grant.data} if fresh else {"cloudID": cid,
                                                                  **CLOUD_ID_EXPIRED}
        items.append({"cloud_id": cid, "json": json.dumps(doc, ensure_ascii=False)})
    return {"errcode": 0, "errmsg": "ok", "data_list": items}


def getuserphonenumber(emu: Emulator, req: Request) -> dict[str, Any]:
    """POST /wxa/business/getuserphonenumber {"code": ..., "openid"?: ...}"""
    app = authorize(emu, req)
    body = req.json()
    grant = _redeem(emu, app.appid, body.get("code"), "phone", openid=body.get("openid"))
    cc, number = grant.data
    info = {"phoneNumber": number if cc == "86" else f"+{cc}{number}",
            "purePhoneNumber": number, "countryCode": cc}
    return {"errcode": 0, "errmsg": "ok", "phone_info": _watermarked(emu, app.appid, info)}


# --- helpers -------------------------------------------------------------------------------

def _grant(emu: Emulator, appid: str, openid: str, kind: str, data: Any) -> str:
    code = emu.new_id(32)
    emu.grants[code] = Grant(appid=appid, openid=openid, expires_at=emu.now() + CODE_TTL,
                             kind=kind, data=data)
    return code


def _redeem(emu: Emulator, appid: str, code: Any, kind: str, *, openid: Any = None) -> Grant:
    """Single use: unknown / expired / foreign -> 40029, second use -> 40163."""
    if not code:
        raise Fail(41008)
    grant = emu.grants.get(code) if isinstance(code, str) else None
    if grant is None or grant.kind != kind or grant.appid != appid:
        raise Fail(40029)
    if grant.used:
        raise Fail(40163)
    if emu.now() >= grant.expires_at or openid not in (None, grant.openid):
        raise Fail(40029)
    grant.used = True
    return grant


def _session_key(emu: Emulator, appid: str, openid: str) -> str:
    user = emu.app_state(appid).users.get(openid)
    if user is None or user.session_key is None:
        raise ValueError(f"no session for {openid!r}: issue a login_code first")
    return user.session_key


def _watermarked(emu: Emulator, appid: str, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "watermark": {"timestamp": int(emu.now()), "appid": appid}}
