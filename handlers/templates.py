"""Templates of the rules file: ``str.format`` text whose fields are checked when the file
loads, and the result of a rule's function or query as templates reach into it.

``{order}`` is a plain field (a regex group, ``{openid}``); ``{result.status}`` and
``{result[0].answer}`` walk into a result. A plain field is always there once the file has
loaded; a result's field may not be (a function answering without it, a query matching
nothing), and then rendering raises MissingField, which the rule answers with its
``on_error`` reply.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from typing import Any

from webhook import ConfigError

__all__ = ["Fail", "MissingField", "Result", "template", "RESULT"]

Fail = Callable[[str, str | None], ConfigError]
RESULT = "result"
_FORMATTER = string.Formatter()
_ROOT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*")
_PATH = re.compile(r"(?:\.[^.\[\]]+|\[[^\[\]]+\])+")


class MissingField(Exception):
    """A template reached for a field of a result that is not there (or is null)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Result:
    """A JSON value as templates see it: ``.name`` and ``[name]`` for an object's fields,
    ``[0]`` for a list's items; a string is written as it is, anything else as JSON."""

    __slots__ = ("_value", "_path")

    def __init__(self, value: Any, path: str = RESULT) -> None:
        self._value, self._path = value, path

    def __getattr__(self, name: str) -> Result:
        return self._step(name, f"{self._path}.{name}")

    def __getitem__(self, key: int | str) -> Result:
        return self._step(key, f"{self._path}[{key}]")

    def _step(self, key: int | str, path: str) -> Result:
        value = self._value
        if isinstance(value, dict) and isinstance(key, str) and key in value:
            return Result(value[key], path)
        if isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            return Result(value[key], path)
        raise MissingField(path)

    def __format__(self, spec: str) -> str:
        value = self._value
        if value is None:
            raise MissingField(self._path)
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def template(value: Any, where: str, fields: set[str], fail: Fail, *,
             structured: frozenset[str] = frozenset()) -> str:
    """A str.format template that uses only ``fields``, and paths into the ``structured``
    ones (``{result.status}``); checked now, so only a structured field can fail later."""
    if not isinstance(value, str) or not value:
        raise fail("must be a non-empty string", where)
    try:
        parsed = list(_FORMATTER.parse(value))
    except ValueError as exc:
        raise fail(f"bad template ({exc}); write {{{{ and }}}} for literal braces", where) from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        root = _ROOT.match(field)
        rest = field[root.end():] if root else field
        known = field in fields or (
            root is not None and root.group() in structured and (
                not rest or (_PATH.fullmatch(rest) is not None and "__" not in rest)))
        if not known or spec or conversion:
            available = sorted(fields) + [f"{name}..." for name in sorted(structured)]
            raise fail(f"template field {{{field}}} is not available here "
                       f"(available: {', '.join('{%s}' % f for f in available)}; "
                       f"write {{{{ and }}}} for literal braces)", where)
    return value
