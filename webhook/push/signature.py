"""Pure request authentication: WeChat's sha1 signatures and the timestamp window.

docs/protocol.md §1 and §2.3: ``signature = sha1(sort(Token, timestamp, nonce))`` and
``msg_signature = sha1(sort(Token, timestamp, nonce, Encrypt))``, lowercase hex. The clock is
always passed in, never read here.
"""

from __future__ import annotations

import hashlib
import hmac

from webhook.errors import BadSignature, MalformedRequest, StaleTimestamp

__all__ = ["signature", "verify", "check_timestamp"]

# WeChat sends 10 digits; anything much longer is garbage, not a time.
_MAX_TIMESTAMP_DIGITS = 18


def signature(*parts: str) -> str:
    """sha1 of the parts sorted as strings and joined with no separator, lowercase hex.

    Code-point order equals the byte order of PHP's ``sort($a, SORT_STRING)`` on UTF-8.
    """
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def verify(expected: str, *parts: str) -> None:
    """Raise BadSignature unless ``expected`` is the signature of ``parts`` (constant time);
    MalformedRequest if a part is not valid Unicode (half a surrogate pair), which UTF-8, and
    so sha1, cannot take. The edge refuses such text before (``webhook.wellformed``); encoding
    it here is the check that costs nothing."""
    try:
        actual = signature(*parts)
    except UnicodeEncodeError:
        raise MalformedRequest("signed value is not valid Unicode") from None
    try:
        given = expected.encode("ascii")
    except UnicodeEncodeError:
        raise BadSignature("bad signature") from None
    if not hmac.compare_digest(given, actual.encode("ascii")):
        raise BadSignature("bad signature")


def check_timestamp(timestamp: str, *, now: float, tolerance: int) -> int:
    """The URL ``timestamp`` as an int; StaleTimestamp if it is more than ``tolerance`` seconds
    away from ``now`` (``tolerance == 0`` turns the window off)."""
    # int() alone would also take " 1", "+1", "1_0" and non-ASCII digits.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise MalformedRequest("timestamp is not a decimal number")
    value = int(timestamp)
    if tolerance and abs(now - value) > tolerance:
        raise StaleTimestamp("timestamp outside the allowed window")
    return value
