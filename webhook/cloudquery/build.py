"""Writing statements: ``collection(...)`` and its Query, every value a JSON literal."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Command", "Query", "Statement", "collection", "eq", "neq", "gt", "gte", "lt", "lte",
           "in_", "nin", "MAX_LIMIT", "MAX_DEPTH", "ACTIONS", "COMMANDS", "is_integer"]

MAX_LIMIT = 1000            # the most records one query returns on the server side
MAX_DEPTH = 32              # nesting of objects and arrays in one value
SAFE_INTEGER = 2**53 - 1    # larger integers lose digits as JavaScript numbers
# verb -> the database API that runs it (docs/protocol.md §9.2)
ACTIONS = {"get": "databasequery", "count": "databasecount", "add": "databaseadd",
           "update": "databaseupdate", "remove": "databasedelete"}
COMMANDS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "nin")


@dataclass(frozen=True, slots=True)
class Command:
    """A comparison inside ``where``: ``gt(10)`` is written ``db.command.gt(10)``."""

    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in COMMANDS:
            raise ValueError(f"unknown command {self.op!r} (known: {', '.join(COMMANDS)})")
        if self.op in ("in", "nin") and not isinstance(self.value, list):
            raise ValueError(f"{self.op} takes a list of values")
        object.__setattr__(self, "value", _checked(self.value, "command value"))


def _command(op: str) -> Callable[[Any], Command]:
    """``eq``, ``gt`` ...: the Command of ``op``; ``in_`` and ``nin`` take any iterable."""
    def command(value: Any) -> Command:
        return Command(op, list(value) if op in ("in", "nin") else value)
    command.__name__ = command.__qualname__ = "in_" if op == "in" else op
    return command


eq, neq, gt, gte, lt, lte, in_, nin = map(_command, COMMANDS)


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement to send: ``action`` is the API (``databasequery`` ...), ``text`` the body's
    ``query``."""

    action: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Query:
    """One collection, narrowed; each method returns a new Query, the last one a Statement."""

    name: str
    doc_id: str | None = None
    conditions: dict[str, Any] | None = None
    ordering: tuple[tuple[str, str], ...] = ()
    offset: int | None = None
    size: int | None = None

    # -- narrowing ------------------------------------------------------------------------
    def doc(self, doc_id: str) -> Query:
        """The one record whose ``_id`` is ``doc_id``."""
        if not isinstance(doc_id, str) or not doc_id:
            raise ValueError("doc() takes a record's _id, a non-empty string")
        if self.conditions is not None or self.ordering or self.offset is not None \
                or self.size is not None:
            raise ValueError("doc() cannot follow where(), order_by(), skip() or limit()")
        return replace(self, doc_id=doc_id)

    def where(self, conditions: Mapping[str, Any]) -> Query:
        """Records whose fields equal these values (a Command compares instead; a nested
        object matches nested fields)."""
        self._no_doc("where")
        if not isinstance(conditions, Mapping):
            raise ValueError("where() takes an object of field: value")
        return replace(self, conditions=_checked(dict(conditions), "where", commands=True))

    def order_by(self, name: str, direction: str = "asc") -> Query:
        self._no_doc("order_by")
        if not isinstance(name, str) or not name:
            raise ValueError("order_by() takes a field name")
        if direction not in ("asc", "desc"):
            raise ValueError('order_by() direction is "asc" or "desc"')
        return replace(self, ordering=self.ordering + ((name, direction),))

    def skip(self, count: int) -> Query:
        self._no_doc("skip")
        if not is_integer(count) or count < 0:
            raise ValueError("skip() takes a whole number >= 0")
        return replace(self, offset=count)

    def limit(self, count: int) -> Query:
        self._no_doc("limit")
        if not is_integer(count) or not 1 <= count <= MAX_LIMIT:
            raise ValueError(f"limit() takes a whole number from 1 to {MAX_LIMIT}")
        return replace(self, size=count)

    # -- statements -----------------------------------------------------------------------
    def get(self) -> Statement:
        """The matching records (10 unless ``limit`` says otherwise)."""
        return Statement(ACTIONS["get"], self._text() + ".get()")

    def count(self) -> Statement:
        if self.doc_id is not None or self.ordering or self.offset is not None \
                or self.size is not None:
            raise ValueError("count() takes only where()")
        return Statement(ACTIONS["count"], self._text() + ".count()")

    def update(self, data: Mapping[str, Any]) -> Statement:
        """Set these fields on the matching records."""
        self._targeted("update")
        if not isinstance(data, Mapping) or not data:
            raise ValueError("update() takes a non-empty object of field: value")
        return Statement(ACTIONS["update"],
                         f"{self._text()}.update({{data:{_js(_checked(dict(data), 'data'))}}})")

    def remove(self) -> Statement:
        self._targeted("remove")
        return Statement(ACTIONS["remove"], self._text() + ".remove()")

    def add(self, data: Mapping[str, Any] | list[Mapping[str, Any]]) -> Statement:
        """Add one record, or several (a list); WeChat answers their ``_id``s."""
        if self != Query(self.name):
            raise ValueError("add() follows collection() directly")
        records = data if isinstance(data, list) else [data]
        if not records or not all(isinstance(r, Mapping) for r in records):
            raise ValueError("add() takes an object or a non-empty list of objects")
        checked = _checked([dict(r) for r in records] if isinstance(data, list) else dict(data),
                           "data")
        return Statement(ACTIONS["add"], f"{self._text()}.add({{data:{_js(checked)}}})")

    # -- text -----------------------------------------------------------------------------
    def _text(self) -> str:
        parts = [f"db.collection({_js(self.name)})"]
        if self.doc_id is not None:
            parts.append(f".doc({_js(self.doc_id)})")
        if self.conditions is not None:
            parts.append(f".where({_js(self.conditions)})")
        parts += [f".orderBy({_js(name)},{_js(direction)})" for name, direction in self.ordering]
        if self.offset is not None:
            parts.append(f".skip({self.offset})")
        if self.size is not None:
            parts.append(f".limit({self.size})")
        return "".join(parts)

    def _no_doc(self, method: str) -> None:
        if self.doc_id is not None:
            raise ValueError(f"{method}() cannot follow doc()")

    def _targeted(self, verb: str) -> None:
        if self.doc_id is None and self.conditions is None:
            raise ValueError(f"{verb}() needs doc() or where() first")
        if self.ordering or self.offset is not None or self.size is not None:
            raise ValueError(f"{verb}() takes no order_by(), skip() or limit()")


def collection(name: str) -> Query:
    """The start of every statement."""
    if not isinstance(name, str) or not name:
        raise ValueError("collection() takes a collection name")
    return Query(name)


# -- values ---------------------------------------------------------------------------------

def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(value: Any, where: str, *, commands: bool = False, depth: int = 0) -> Any:
    """A fresh copy of ``value`` if it is made of JSON values only (and Commands, inside
    ``where``); ValueError naming ``where`` otherwise."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if abs(value) > SAFE_INTEGER:
            raise ValueError(f"{where}: {value} is beyond a JavaScript number; send it as text")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number")
        return value
    if isinstance(value, Command):
        if not commands:
            raise ValueError(f"{where}: a command belongs in where()")
        return value
    if isinstance(value, list):
        return [_checked(item, where, commands=commands, depth=depth + 1) for item in value]
    if isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"{where}: field names are non-empty strings")
            copy[key] = _checked(item, where, commands=commands, depth=depth + 1)
        return copy
    raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")


def _js(value: Any) -> str:
    """``value`` as the statement writes it: JSON, and ``db.command.op(...)`` for a Command."""
    if isinstance(value, Command):
        return f"db.command.{value.op}({_js(value.value)})"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_js(key)}:{_js(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_js(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=True, allow_nan=False)
