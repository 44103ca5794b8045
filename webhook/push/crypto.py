"""Pure AES envelope of compatible/safe mode: decrypt, encrypt, appid check, key rotation.

docs/protocol.md §2.4: AESKey = Base64_Decode(EncodingAESKey + "="), AES-256-CBC with
IV = AESKey[:16], PKCS#7 over **32-byte** blocks, and the plaintext
``random(16) ‖ be32(len(msg)) ‖ msg ‖ receiveid`` where receiveid is the AppID.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import threading
from typing import Any

from Crypto.Cipher import AES

from webhook.errors import DecryptError, MalformedRequest

__all__ = ["aes_key", "Cipher", "KeyRing", "BLOCK", "NOT_OPEN"]

BLOCK = 32  # WeChat's PKCS#7 "K": pad to 32 bytes, not AES's 16
NOT_OPEN = "Encrypt does not open"  # the one reason for every push that does not open
_KEY_CHARS = re.compile(r"[A-Za-z0-9+/]{43}")
_HEADER = 20  # random(16) + msg_len(4)
# PKCS#7 with K = 32: a pad of 1..32 bytes, each holding the pad length. For each value of
# the last byte, the padding it claims; a value that is no pad (0, over K) claims K bytes
# that never match, the last differing from the byte itself, so it costs what a pad costs.
_PADDING = tuple(bytes((value,)) * value if 0 < value <= BLOCK
                 else bytes((value,)) * (BLOCK - 1) + bytes((value ^ 1,)) for value in range(256))


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key of a console EncodingAESKey.

    Decoded leniently: 43 characters carry 258 bits and the console's keys usually have
    non-zero trailing bits, which strict decoders refuse (docs/protocol.md §2.4 pitfalls).
    """
    if not _KEY_CHARS.fullmatch(encoding_aes_key):
        raise ValueError("an EncodingAESKey is exactly 43 base64 characters")
    return base64.b64decode(encoding_aes_key + "=")


def _unbase64(encrypt: str) -> bytes:
    try:
        data = binascii.a2b_base64(encrypt, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII str
        raise MalformedRequest("Encrypt is not base64") from None
    if not data or len(data) % 16:
        raise MalformedRequest("Encrypt is not whole AES blocks")
    return data


class Cipher:
    """One EncodingAESKey bound to one AppID; key and AppID bytes are derived once, and each
    thread keeps one decryptor for every push it opens."""

    __slots__ = ("appid", "_key", "_receiveid", "_local")

    def __init__(self, encoding_aes_key: str, appid: str) -> None:
        self.appid = appid
        self._key = aes_key(encoding_aes_key)
        self._receiveid = appid.encode("utf-8")
        self._local = threading.local()

    def _cbc(self) -> Any:
        """AES-256-CBC with IV = the key's first 16 bytes."""
        return AES.new(self._key, AES.MODE_CBC, iv=self._key[:16])

    def _decryptor(self) -> Any:
        """This thread's decryptor: making one costs a push more than its decryption does.
        CBC decryption of block i reads only ciphertext blocks i and i-1; the chaining state
        a previous push left in the object touches block 0 alone, which holds WeChat's 16
        random bytes and is never read. So one object serves every push."""
        try:
            return self._local.cbc
        except AttributeError:
            self._local.cbc = self._cbc()
            return self._local.cbc

    def __repr__(self) -> str:
        return f"Cipher(appid={self.appid!r})"

    def decrypt(self, encrypt: str) -> bytes:
        """The ``msg`` bytes inside a base64 ``Encrypt`` value."""
        return self.open(_unbase64(encrypt))

    def open(self, data: bytes) -> bytes:
        """Like decrypt, for already base64-decoded ciphertext (whole 16-byte blocks).

        CBC without a MAC is malleable, and msg_signature stops no one who holds the Token:
        a failure must not say which check failed (a padding oracle). Every check runs,
        whatever the plaintext holds (padding and AppID compared in constant time, combined
        without a short cut), and every failure raises the one DecryptError; only its
        ``detail``, for the operator's log, says which.
        """
        receiveid = self._receiveid
        if len(data) < _HEADER + len(receiveid) + 1:   # the length is public: no oracle
            raise DecryptError(NOT_OPEN, detail="too short")
        plain = self._decryptor().decrypt(data)   # plain[:16] is meaningless: _decryptor
        padding = _PADDING[plain[-1]]
        end = len(plain) - len(padding)
        start = end - len(receiveid)
        pad_ok = hmac.compare_digest(plain[end:], padding)
        length_ok = _HEADER + int.from_bytes(plain[16:_HEADER], "big") == start
        appid_ok = hmac.compare_digest(plain[start:end], receiveid)
        if pad_ok & length_ok & appid_ok:
            return plain[_HEADER:start]
        raise DecryptError(NOT_OPEN, detail="bad padding" if not pad_ok else
                           "message length does not fit" if not length_ok else "another appid")

    def encrypt(self, msg: bytes, *, random16: bytes) -> str:
        """Base64 ``Encrypt`` of ``msg``; ``random16`` is WeChat's 16 random bytes."""
        if len(random16) != 16:
            raise ValueError("random16 must be 16 bytes")
        plain = b"".join((random16, len(msg).to_bytes(4, "big"), msg, self._receiveid))
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes((pad,)) * pad
        return base64.b64encode(self._cbc().encrypt(plain)).decode("ascii")


class KeyRing:
    """The current EncodingAESKey and, during a rotation, the previous one.

    Official FAQ: keep the current and the previous key; if the current one fails, try the
    previous, and encrypt the reply with whichever key opened the push (docs/protocol.md §2.4).
    """

    __slots__ = ("current", "previous")

    def __init__(self, appid: str, current: str, previous: str | None = None) -> None:
        self.current = Cipher(current, appid)
        self.previous = Cipher(previous, appid) if previous else None

    def __repr__(self) -> str:
        return f"KeyRing(appid={self.current.appid!r}, previous={self.previous is not None})"

    def decrypt(self, encrypt: str) -> tuple[bytes, Cipher]:
        """The message bytes and the Cipher that opened them (current first); one
        DecryptError when neither does, whichever checks failed."""
        data = _unbase64(encrypt)
        try:
            return self.current.open(data), self.current
        except DecryptError as current_error:
            if self.previous is None:
                raise
            try:
                return self.previous.open(data), self.previous
            except DecryptError as previous_error:
                raise DecryptError(NOT_OPEN, detail=f"{current_error.detail}; previous key: "
                                                    f"{previous_error.detail}") from None
