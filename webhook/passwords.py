"""Operator passwords, kept only as scrypt hashes (``hashlib.scrypt``), with their parameters
in the hash text so that stronger ones can be chosen later without breaking older hashes:

    scrypt$<n>$<r>$<p>$<salt, base64>$<key, base64>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

__all__ = ["hash_password", "verify_password", "parse_hash", "Scrypt", "DEFAULT", "FORMAT"]

FORMAT = "scrypt$N$r$p$salt$key"
_HASH = re.compile(r"^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$")
# What a hash may ask of verification: a config cannot make a login cost seconds or GiBs.
MAX_N, MAX_R, MAX_P = 1 << 20, 32, 16
MAX_MEMORY = 1 << 30


@dataclass(frozen=True, slots=True)
class Scrypt:
    """scrypt's cost: ``n`` (a power of two), ``r`` and ``p``; memory is 128 * n * r bytes."""

    n: int = 1 << 15
    r: int = 8
    p: int = 1

    @property
    def memory(self) -> int:
        return 128 * self.n * self.r * (self.p + 1)


DEFAULT = Scrypt()   # 32 MiB and about 0.1 s a try


def _derive(password: str, salt: bytes, cost: Scrypt) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=cost.n, r=cost.r, p=cost.p,
                          maxmem=cost.memory + (1 << 20), dklen=32)


def hash_password(password: str, *, cost: Scrypt = DEFAULT, salt: bytes | None = None) -> str:
    """The hash text to put in ``[[console.operators]] password_hash``."""
    salt = os.urandom(16) if salt is None else salt
    key = _derive(password, salt, cost)
    encode = base64.b64encode
    return f"scrypt${cost.n}${cost.r}${cost.p}${encode(salt).decode()}${encode(key).decode()}"


def parse_hash(text: str) -> tuple[Scrypt, bytes, bytes] | None:
    """(cost, salt, key) of a hash text, or None if it is none, or asks for more than a
    login may cost."""
    found = _HASH.match(text)
    if found is None:
        return None
    n, r, p = (int(found.group(i)) for i in (1, 2, 3))
    if not (1 < n <= MAX_N and n & (n - 1) == 0 and 0 < r <= MAX_R and 0 < p <= MAX_P):
        return None
    cost = Scrypt(n, r, p)
    if cost.memory > MAX_MEMORY:
        return None
    try:
        salt, key = (base64.b64decode(found.group(i), validate=True) for i in (4, 5))
    except binascii.Error:
        return None
    return (cost, salt, key) if salt and key else None


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` is the one ``stored`` was made from. ``stored`` None (no such
    operator) costs a derivation all the same, so a refusal takes as long either way."""
    parsed = parse_hash(stored) if stored else None
    if parsed is None:
        _derive(password, b"\0" * 16, DEFAULT)
        return False
    cost, salt, key = parsed
    return hmac.compare_digest(_derive(password, salt, cost), key)
