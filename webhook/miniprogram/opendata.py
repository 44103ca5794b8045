"""Mini program open data, pure: decrypt ``encryptedData``, check watermarks and ``rawData``
signatures, read ``getopendata`` (CloudID) answers and shape phone numbers.

WeChat facts: docs/protocol.md §7 (signature.html, getOpenData, getPhoneNumber). Errors carry a
WeChat-style ``errcode``; the -4100x codes are those of the official open-data sample
(WXBizDataCrypt: -41001 bad session_key, -41002 bad iv, -41003 bad buffer, -41004 base64).
No message built here contains the session_key, the ciphertext or the plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from Crypto.Cipher import AES

from webhook.errors import MalformedRequest, Retryable, Unauthorized
from webhook.wellformed import is_text, loads

__all__ = ["OpenDataError", "SignatureMismatch", "CLOUD_ID_EXPIRED", "decrypt_encrypted_data",
           "check_watermark", "check_raw_signature", "parse_open_data", "phone_info"]

CLOUD_ID_EXPIRED = -601006
ILLEGAL_AES_KEY, ILLEGAL_IV, ILLEGAL_BUFFER, BAD_BASE64 = -41001, -41002, -41003, -41004


class OpenDataError(MalformedRequest):
    """Open data that cannot be accepted (400), with the errcode to answer."""

    def __init__(self, reason: str, *, errcode: int = ILLEGAL_BUFFER) -> None:
        super().__init__(reason)
        self.errcode = errcode


class SignatureMismatch(Unauthorized):
    """``rawData`` is not signed by this session's session_key (401)."""

    errcode = 87009  # WeChat's "invalid signature"


def _b64(value: Any, name: str, size: int | None = None, *, errcode: int = BAD_BASE64) -> bytes:
    if not isinstance(value, str) or not value:
        raise OpenDataError(f"{name} must be a non-empty base64 string", errcode=errcode)
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:   # binascii.Error, or non-ASCII text
        raise OpenDataError(f"{name} is not valid base64", errcode=errcode) from None
    if size is not None and len(raw) != size:
        raise OpenDataError(f"{name} must decode to {size} bytes", errcode=errcode)
    return raw


def decrypt_encrypted_data(encrypted_data: str, iv: str, session_key: str, *, appid: str,
                           now: float | None = None, max_age: int | None = None) -> dict[str, Any]:
    """Open ``encryptedData`` (AES-128-CBC, PKCS#7 over 16-byte blocks) and check its watermark.

    Bad padding, non-UTF-8 (or a lone surrogate) and non-JSON plaintexts give one and the
    same error, so that answers cannot serve as a padding oracle.
    """
    key = _b64(session_key, "session_key", 16, errcode=ILLEGAL_AES_KEY)
    vector = _b64(iv, "iv")
    if len(vector) != 16:
        raise OpenDataError("iv must decode to 16 bytes", errcode=ILLEGAL_IV)
    ciphertext = _b64(encrypted_data, "encryptedData")
    if not ciphertext or len(ciphertext) % 16:
        raise OpenDataError("encryptedData is not a whole number of 16-byte blocks")
    padded = AES.new(key, AES.MODE_CBC, vector).decrypt(ciphertext)
    try:
        data = loads(_unpad(padded))
    except (ValueError, RecursionError):   # bad padding, not UTF-8, not JSON: alike
        raise OpenDataError("encryptedData does not open with this session "
                            "(log in again and retry)") from None
    if not isinstance(data, dict):
        raise OpenDataError("encryptedData does not hold a JSON object")
    check_watermark(data, appid=appid, now=now, max_age=max_age)
    return data


def _unpad(padded: bytes) -> bytes:
    count = padded[-1]
    if not 1 <= count <= 16 or padded[-count:] != bytes([count]) * count:
        raise ValueError("bad padding")
    return padded[:-count]


def check_watermark(data: Mapping[str, Any], *, appid: str, now: float | None = None,
                    max_age: int | None = None) -> None:
    """``data["watermark"]`` must name ``appid``; if ``max_age`` (> 0), its timestamp must lie
    within ``max_age`` seconds of ``now`` (either side: a watermark from the future is as
    suspect as an old one)."""
    mark = data.get("watermark")
    if not isinstance(mark, Mapping):
        raise OpenDataError("open data has no watermark")
    if mark.get("appid") != appid:
        raise OpenDataError("open data watermark is for another appid")
    if max_age:
        stamp = mark.get("timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, int):
            raise OpenDataError("open data watermark has no timestamp")
        if now is None:
            raise ValueError("check_watermark: max_age needs now")
        if abs(now - stamp) > max_age:
            raise OpenDataError(f"open data is stale (watermark more than {max_age} s away)")


def check_raw_signature(raw_data: str, signature: str, session_key: str) -> None:
    """``signature == sha1(rawData + session_key)``, compared in constant time."""
    if not isinstance(raw_data, str) or not isinstance(signature, str):
        raise OpenDataError("rawData and signature must be strings", errcode=40097)
    if not (is_text(raw_data) and is_text(signature)):
        raise OpenDataError("rawData and signature must be valid Unicode", errcode=40097)
    expected = hashlib.sha1((raw_data + session_key).encode("utf-8")).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("utf-8")):
        raise SignatureMismatch("rawData signature does not match this session")


def parse_open_data(data_list: Sequence[Any], *, appid: str, now: float | None = None,
                    max_age: int | None = None) -> list[dict[str, Any]]:
    """Decode ``getopendata``'s ``data_list``: each item's ``json`` (a JSON string per the
    docs' table, an object per their example: both accepted) -> ``{"cloudID", "data"}`` with
    ``data.watermark`` checked. An expired item (``errCode`` -601006) or any other item
    error fails the whole call."""
    if not isinstance(data_list, Sequence) or isinstance(data_list, str):
        raise Retryable(-1, "getopendata answer has no data_list")
    out = []
    for index, item in enumerate(data_list):
        raw = item.get("json") if isinstance(item, Mapping) else None
        try:
            decoded = loads(raw) if isinstance(raw, str) else raw
        except (ValueError, RecursionError):
            decoded = None
        if not isinstance(decoded, dict):
            raise Retryable(-1, f"getopendata item {index} has no JSON")
        errcode = decoded.get("errCode", 0)
        if errcode:
            reason = " ".join(str(decoded.get("errMsg") or "cloudID refused").split())[:120]
            code = errcode if isinstance(errcode, int) else ILLEGAL_BUFFER
            raise OpenDataError(f"cloudID {index}: {reason}", errcode=code)
        data = decoded.get("data")
        if not isinstance(data, dict):
            raise OpenDataError(f"cloudID {index}: open data has no data object")
        check_watermark(data, appid=appid, now=now, max_age=max_age)
        out.append(decoded)
    return out


def phone_info(info: Mapping[str, Any], *, appid: str, now: float | None = None,
               max_age: int | None = None) -> dict[str, Any]:
    """``getuserphonenumber``'s ``phone_info`` object, watermark checked, ``countryCode`` as
    a string (typed string in the docs' table, a number in their example)."""
    if not isinstance(info.get("phoneNumber"), str):
        raise Retryable(-1, "getuserphonenumber answer has no phoneNumber")
    check_watermark(info, appid=appid, now=now, max_age=max_age)
    return {
        "phoneNumber": info["phoneNumber"],
        "purePhoneNumber": str(info.get("purePhoneNumber", "")),
        "countryCode": str(info.get("countryCode", "")),
        "watermark": dict(info["watermark"]),
    }
