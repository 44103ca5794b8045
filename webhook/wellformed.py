"""Text from outside is valid Unicode before anything hashes, compares, stores or logs it.

A Python str can hold a lone surrogate (U+D800..U+DFFF), which no UTF-8 can carry: encoding
it raises, wherever that happens later (a signature's sha1, a store write, a JSON answer).
Bytes decoded strictly as UTF-8 never hold one, and falcon decodes the path and query
values with replacement (invalid UTF-8 becomes U+FFFD), so those never do either. JSON's
``\\ud800`` escape makes one from plain ASCII: every JSON from outside is decoded with
``loads`` or checked with ``json_is_text``.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["is_text", "json_is_text", "loads", "NotText", "DECODER"]

_SURROGATE = re.compile("[\ud800-\udfff]")
# The only way JSON text makes a surrogate: a \u escape of D800..DFFF (any case).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class NotText(ValueError):
    """Input that is not valid Unicode: bytes that are not UTF-8, or a lone surrogate."""


def is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode (holds no surrogate code point)."""
    return value.isascii() or _SURROGATE.search(value) is None


def _all_text(value: Any) -> bool:
    """Every string in a decoded JSON value; a loop, not recursion: the decoder takes
    nesting deeper than half the recursion limit."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:  # noqa: E721
            if not is_text(item):
                return False
        elif type(item) is dict:  # noqa: E721
            if not all(map(is_text, item)):
                return False
            stack.extend(item.values())
        elif type(item) is list:  # noqa: E721
            stack.extend(item)
    return True


def json_is_text(raw: str, value: Any) -> bool:
    """Whether every string (keys too) of ``value``, decoded from the JSON text ``raw``, is
    valid Unicode. Walks ``value`` only when ``raw`` holds an escape that could make a
    surrogate (a correct pair too, which decodes to one character); most JSON holds no
    backslash at all, and a one-character search is the cheapest look."""
    return "\\" not in raw or _SURROGATE_ESCAPE.search(raw) is None or _all_text(value)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} refused")


# NaN and Infinity are not JSON; json.loads would accept them.
DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def loads(raw: bytes | str) -> Any:
    """The JSON value of ``raw``: UTF-8 (bytes are never guessed to be UTF-16), no NaN or
    Infinity, every string valid Unicode. NotText for text that is not, ValueError (or
    RecursionError, for absurd nesting) for anything else that is not JSON."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise NotText("not UTF-8") from None
    value = DECODER.decode(raw)
    if not json_is_text(raw, value):
        raise NotText("a lone surrogate")
    return value
