"""Reading statements back: ``parse`` reads exactly what ``build`` writes, naming the column
of anything else."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from webhook.cloudquery.build import ACTIONS, MAX_DEPTH, Command, Query, collection, is_integer
from webhook.wellformed import DECODER

__all__ = ["Operation", "parse"]

_COMMAND = re.compile(r"db\.command\.([a-z]+)\(")


@dataclass(frozen=True, slots=True)
class Operation:
    """A statement read back: the query, its verb (get, count, add, update, remove) and the
    data of add or update."""

    query: Query
    verb: str
    data: Any = field(default=None)

    @property
    def action(self) -> str:
        return ACTIONS[self.verb]


def parse(text: str) -> Operation:
    """Read a statement written by ``Query``; ValueError naming the column of anything else."""
    if not isinstance(text, str):
        raise ValueError("a statement is text")
    return _Reader(text).statement()


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, problem: str) -> ValueError:
        return ValueError(f"column {self.pos + 1}: {problem}")

    def take(self, literal: str) -> bool:
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def expect(self, literal: str) -> None:
        if not self.take(literal):
            raise self.fail(f"expected {literal!r}")

    def statement(self) -> Operation:
        self.expect("db.collection(")
        query = self.built(self.pos, collection, self.string())
        self.expect(")")
        start = self.pos
        if self.take(".add({data:"):
            data = self.value(commands=False)
            self.expect("})")
            self.built(start, query.add, data)
            verb = "add"
        else:
            query, verb, data = self.chain(query)
        if self.pos != len(self.text):
            raise self.fail("text after the statement's end")
        return Operation(query, verb, data)

    def chain(self, query: Query) -> tuple[Query, str, Any]:
        if self.take(".doc("):
            query = self.built(self.pos, query.doc, self.string())
            self.expect(")")
        if self.take(".where("):
            query = self.built(self.pos, query.where, self.value(commands=True))
            self.expect(")")
        while self.take(".orderBy("):
            start, name = self.pos, self.string()
            self.expect(",")
            query = self.built(start, query.order_by, name, self.string())
            self.expect(")")
        if self.take(".skip("):
            query = self.built(self.pos, query.skip, self.integer())
            self.expect(")")
        if self.take(".limit("):
            query = self.built(self.pos, query.limit, self.integer())
            self.expect(")")
        start = self.pos
        for verb in ("get", "count", "remove"):
            if self.take(f".{verb}()"):
                self.built(start, getattr(query, verb))
                return query, verb, None
        if self.take(".update({data:"):
            data = self.value(commands=False)
            self.expect("})")
            self.built(start, query.update, data)
            return query, "update", data
        raise self.fail("expected .get(), .count(), .update({data:...}) or .remove()")

    def built(self, start: int, method: Any, *args: Any) -> Any:
        """``method(*args)`` of the builder, whose refusal names the column at ``start``."""
        try:
            return method(*args)
        except ValueError as exc:
            self.pos = start
            raise self.fail(str(exc)) from None

    def scalar(self) -> Any:
        if self.pos < len(self.text) and self.text[self.pos] in "{[":
            raise self.fail("expected a JSON scalar")
        try:
            value, end = DECODER.raw_decode(self.text, self.pos)
        except ValueError:
            raise self.fail("expected a JSON value") from None
        self.pos = end
        return value

    def string(self) -> str:
        start = self.pos
        value = self.scalar()
        if not isinstance(value, str):
            self.pos = start
            raise self.fail("expected a JSON string")
        return value

    def integer(self) -> int:
        start = self.pos
        value = self.scalar()
        if not is_integer(value):
            self.pos = start
            raise self.fail("expected a whole number")
        return value

    def value(self, *, commands: bool, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH}")
        if self.take("{"):
            found: dict[str, Any] = {}
            while not self.take("}"):
                if found:
                    self.expect(",")
                key = self.string()
                if key in found:
                    raise self.fail(f"field {key!r} given twice")
                self.expect(":")
                found[key] = self.value(commands=commands, depth=depth + 1)
            return found
        if self.take("["):
            items: list[Any] = []
            while not self.take("]"):
                if items:
                    self.expect(",")
                items.append(self.value(commands=commands, depth=depth + 1))
            return items
        command = _COMMAND.match(self.text, self.pos)
        if command:
            if not commands:
                raise self.fail("a command belongs in where()")
            start, self.pos = self.pos, command.end()
            value = self.value(commands=False, depth=depth + 1)
            self.expect(")")
            return self.built(start, Command, command.group(1), value)
        return self.scalar()
