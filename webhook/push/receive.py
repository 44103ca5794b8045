"""Pure path of one push before it is recorded: check, open, parse; and seal the passive answer.

docs/protocol.md §1 (URL verification), §2 (POST push in plaintext / compatible / safe mode) and
§2.5 (encrypted passive reply). Every refusal is a RequestRejected subclass whose ``status``
is the HTTP answer; the clock is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.config.settings import AppConfig
from webhook.errors import DecryptError, MalformedRequest
from webhook.push.crypto import NOT_OPEN, Cipher, KeyRing
from webhook.push.messages import Message
from webhook.push.parsing import cdata, parse_body, read_message, render
from webhook.push.signature import check_timestamp, signature, verify

__all__ = ["Push", "keyring_for", "verify_url", "open_push", "seal", "sealed_body"]


@dataclass(frozen=True, slots=True)
class Push:
    """One opened push: ``plaintext`` is the message text as decrypted (or the body in
    plaintext mode), in the app's format, and ``message`` what it says; ``cipher`` the key
    that opened it, which must seal the answer."""

    plaintext: bytes
    cipher: Cipher | None
    nonce: str
    message: Message


def _read(plaintext: bytes, fmt: str, cipher: Cipher | None, nonce: str) -> Push:
    """The push whose message is ``plaintext``. One that cannot be read is MalformedRequest
    (400) in plaintext mode, and the DecryptError of a ciphertext that does not open (403)
    when it was decrypted: a tampered ciphertext whose padding and AppID still check out
    decrypts to garbage, and a different answer would tell whoever altered it that those
    checks passed."""
    try:
        message = read_message(plaintext, fmt)
    except MalformedRequest as exc:
        if cipher is None:
            raise
        raise DecryptError(NOT_OPEN, detail=f"message unreadable: {exc.reason}") from None
    return Push(plaintext, cipher, nonce, message)


def keyring_for(app: AppConfig) -> KeyRing | None:
    """The app's keys, built once per app at start (None without an EncodingAESKey)."""
    if not app.encoding_aes_key:
        return None
    return KeyRing(app.appid, app.encoding_aes_key, app.previous_encoding_aes_key)


def _missing(query: Mapping[str, str], *names: str) -> MalformedRequest:
    missing = next((name for name in names if not query.get(name)), names[0])
    return MalformedRequest(f"query parameter {missing} is missing")


def _signed(query: Mapping[str, str], name: str, *, now: float,
            tolerance: int) -> tuple[str, str, str]:
    """The signature ``name`` (``signature`` or ``msg_signature``), timestamp and nonce, all
    present and the timestamp inside the window; the caller checks the signature."""
    given, timestamp, nonce = query.get(name), query.get("timestamp"), query.get("nonce")
    if not (given and timestamp and nonce):
        raise _missing(query, name, "timestamp", "nonce")
    check_timestamp(timestamp, now=now, tolerance=tolerance)
    return given, timestamp, nonce


def _check_url_signature(app: AppConfig, query: Mapping[str, str], *, now: float,
                         tolerance: int) -> str:
    """signature = sha1(sort(Token, timestamp, nonce)): what authenticates the GET and a
    plaintext POST. Returns the nonce."""
    given, timestamp, nonce = _signed(query, "signature", now=now, tolerance=tolerance)
    verify(given, app.token, timestamp, nonce)
    return nonce


def verify_url(app: AppConfig, query: Mapping[str, str], *, now: float, tolerance: int) -> str:
    """The ``echostr`` to answer the console's GET with, once its signature checks out.

    The same in all three modes (unlike WeCom, nothing here is encrypted).
    """
    echostr = query.get("echostr")
    if not echostr:
        raise _missing(query, "echostr")
    _check_url_signature(app, query, now=now, tolerance=tolerance)
    return echostr


def open_push(app: AppConfig, keyring: KeyRing | None, query: Mapping[str, str], body: bytes,
              *, now: float, tolerance: int) -> Push:
    """Authenticate, decrypt and parse one POSTed push.

    With ``encrypt_type=aes`` the push is authenticated by ``msg_signature`` alone, as the
    official docs say ("校验msg_signature签名是否正确 … 注意：不要使用signature验证！",
    docs/protocol.md §2.1): it signs the same Token, timestamp and nonce as the URL ``signature``
    plus the body's ``Encrypt``. Order: query parameters (400), timestamp window (403),
    envelope (400), ``msg_signature`` (403), ``Encrypt`` as base64 of whole blocks (400),
    decrypt (403); then the message in the app's format (403 like a decrypt failure, see
    ``_read``). Compatible mode ignores the body's plaintext copy. Without ``aes``:
    ``signature`` (403) before the body is looked at, then the message (400).
    """
    # WeChat's FAQ: no encrypt_type, or "raw", means a plaintext body; "aes" an encrypted one.
    encrypt_type = query.get("encrypt_type") or "raw"
    if encrypt_type not in ("raw", "aes"):
        raise MalformedRequest("unknown encrypt_type")
    if encrypt_type == "raw" or keyring is None:
        nonce = _check_url_signature(app, query, now=now, tolerance=tolerance)
        if app.mode != "plaintext":
            raise (MalformedRequest("encrypted push expected") if encrypt_type == "raw"
                   else DecryptError("no EncodingAESKey configured for this app"))
        # Plaintext mode, or encrypt_type=aes while we hold no key: read the plaintext copy.
        return _read(body, app.format, None, nonce)
    msg_signature, timestamp, nonce = _signed(query, "msg_signature", now=now,
                                              tolerance=tolerance)
    encrypt = parse_body(body, app.format).get("Encrypt")
    if not encrypt or type(encrypt) is not str:  # noqa: E721
        raise MalformedRequest("Encrypt is missing")
    verify(msg_signature, app.token, timestamp, nonce, encrypt)
    plaintext, cipher = keyring.decrypt(encrypt)
    return _read(plaintext, app.format, cipher, nonce)


def sealed_body(cipher: Cipher, token: str, message: bytes, *, nonce: str, now: int,
                random16: bytes, fmt: str) -> str:
    """The encrypted passive-response envelope around ``message`` (docs/protocol.md §2.5).

    JSON: TimeStamp a number, Nonce a string (the final official example). XML: the layout of
    the official example, CDATA everywhere but TimeStamp.
    """
    encrypt = cipher.encrypt(message, random16=random16)
    msg_signature = signature(token, str(now), nonce, encrypt)
    if fmt == "json":
        return json.dumps({"Encrypt": encrypt, "MsgSignature": msg_signature, "TimeStamp": now,
                           "Nonce": nonce}, ensure_ascii=False, separators=(",", ":"))
    return (f"<xml>\n<Encrypt>{cdata(encrypt)}</Encrypt>\n"
            f"<MsgSignature>{cdata(msg_signature)}</MsgSignature>\n"
            f"<TimeStamp>{now}</TimeStamp>\n<Nonce>{cdata(nonce)}</Nonce>\n</xml>")


def seal(app: AppConfig, push: Push, fields: Mapping[str, Any], *, now: int,
         random16: bytes) -> str:
    """The passive response body carrying ``fields``: encrypted with the key that opened the
    push (official FAQ on key rotation), or plain when the push was plaintext.

    Plain acknowledgements (``success`` / empty) are never sealed (docs/protocol.md §4.1).
    """
    text = render(fields, app.format)
    if push.cipher is None:
        return text
    return sealed_body(push.cipher, app.token, text.encode("utf-8"), nonce=push.nonce, now=now,
                       random16=random16, fmt=app.format)
