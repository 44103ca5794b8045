"""The cloud database (docs/protocol.md §9.2): in-memory collections, and the five database
APIs running the statements ``webhook.cloudquery`` writes.

A statement is read with ``cloudquery.parse``: anything it does not read (a query another
client wrote, a command not listed there) is refused loudly, errcode 40097 with the column,
rather than half-understood. Matching follows the cloud database for what the builder can
say: equal values (a list field also matches one of its items), nested objects matching
nested fields, dotted field names, and the comparison commands. A collection must exist
(``Emulator.add_cloud_env``), as in the cloud database: -502005 otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from webhook.cloudquery import Command, Operation, parse
from webhook.testing.emulator.state import CloudEnv, Fail, Request
from webhook.testing.emulator.tokens import authorize

if TYPE_CHECKING:
    from webhook.testing.emulator.core import Emulator

__all__ = ["endpoint", "execute", "cloud_env", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = 10      # records a query answers without limit() (§9.2)
UNREADABLE, NO_COLLECTION = 40097, -502005
_MISSING = object()


def cloud_env(emu: Emulator, req: Request, env: Any) -> CloudEnv:
    """The environment the call names, which must be its token's app's: 40101 when not
    named, -501000 when there is none such."""
    app = authorize(emu, req)
    if not isinstance(env, str) or not env:
        raise Fail(40101, "missing parameter env")
    found = emu.cloud_envs.get(env)
    if found is None or found.appid != app.appid:
        raise Fail(-501000, f"Environment not found: {env}")
    return found


def _statement(emu: Emulator, req: Request, action: str) -> tuple[CloudEnv, Operation]:
    body = req.json()
    env = cloud_env(emu, req, body.get("env"))
    text = body.get("query")
    if not isinstance(text, str) or not text:
        raise Fail(40101, "missing parameter query")
    try:
        operation = parse(text)
    except ValueError as exc:
        raise Fail(UNREADABLE, f"the emulator does not read this query: {exc}") from None
    if operation.action != action:
        raise Fail(UNREADABLE, f"a {operation.verb}() statement sent to {action}")
    return env, operation


def endpoint(action: str) -> Callable[[Emulator, Request], dict[str, Any]]:
    """The emulator's ``POST /tcb/<action>``: {env, query} in, WeChat's answer out."""
    def answer(emu: Emulator, req: Request) -> dict[str, Any]:
        env, operation = _statement(emu, req, action)
        return {"errcode": 0, "errmsg": "ok", **execute(env, operation, lambda: emu.new_id(32))}
    answer.__doc__ = f"POST /tcb/{action} {{env, query}}"
    return answer


def execute(env: CloudEnv, operation: Operation, new_id: Callable[[], str]) -> dict[str, Any]:
    """Run ``operation`` on ``env``'s collections: the answer's fields besides errcode."""
    if operation.query.name not in env.collections:
        raise Fail(NO_COLLECTION, f"database collection not exists: {operation.query.name}")
    records = env.collections[operation.query.name]
    if operation.verb == "add":
        ids = []
        for record in operation.data if isinstance(operation.data, list) else [operation.data]:
            record = dict(record)
            record.setdefault("_id", new_id())
            records.append(record)
            ids.append(record["_id"])
        return {"id_list": ids}
    found = _matching(records, operation)
    if operation.verb == "count":
        return {"count": len(found)}
    if operation.verb == "remove":
        doomed = {id(record) for record in found}
        records[:] = [record for record in records if id(record) not in doomed]
        return {"deleted": len(doomed)}
    if operation.verb == "update":
        modified = 0
        for record in found:
            before = json.dumps(record, sort_keys=True)
            _merge(record, operation.data)
            modified += json.dumps(record, sort_keys=True) != before
        return {"matched": len(found), "modified": modified, "id": ""}
    q = operation.query
    for name, direction in reversed(q.ordering):
        present = [r for r in found if _field(r, name) is not _MISSING]
        absent = [r for r in found if _field(r, name) is _MISSING]
        present.sort(key=lambda r, name=name: _order_key(_field(r, name)),
                     reverse=direction == "desc")
        found = present + absent
    offset, size = q.offset or 0, q.size or DEFAULT_LIMIT
    page = found[offset:offset + size]
    return {"pager": {"Offset": offset, "Limit": size, "Total": len(found)},
            "data": [json.dumps(record, ensure_ascii=False) for record in page]}


# -- matching -------------------------------------------------------------------------------

def _matching(records: list[dict[str, Any]], operation: Operation) -> list[dict[str, Any]]:
    q = operation.query
    if q.doc_id is not None:
        return [r for r in records if r.get("_id") == q.doc_id]
    conditions = q.conditions or {}
    return [r for r in records if _matches(r, conditions)]


def _field(record: Any, name: str) -> Any:
    value = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _matches(record: dict[str, Any], conditions: dict[str, Any]) -> bool:
    return all(_fits(_field(record, name), wanted) for name, wanted in conditions.items())


def _fits(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, Command):
        return _compare(actual, wanted)
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and _matches(actual, wanted)
    if isinstance(actual, list) and not isinstance(wanted, list):
        return any(_same(item, wanted) for item in actual)
    return _same(actual, wanted)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if a is _MISSING or b is _MISSING:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _compare(actual: Any, command: Command) -> bool:
    op, value = command.op, command.value
    if op == "eq":
        return _fits(actual, value)
    if op == "neq":
        return not _fits(actual, value)
    if op in ("in", "nin"):
        inside = any(_fits(actual, item) for item in value)
        return inside if op == "in" else not inside
    kinds = (_order_kind(actual), _order_kind(value))
    if kinds[0] is None or kinds[0] != kinds[1]:
        return False
    return {"gt": actual > value, "gte": actual >= value, "lt": actual < value,
            "lte": actual <= value}[op]


def _order_kind(value: Any) -> str | None:
    if isinstance(value, bool) or value is _MISSING:
        return None
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else None


def _order_key(value: Any) -> tuple[int, Any]:
    kind = _order_kind(value)
    if kind == "number":
        return (0, value)
    if kind == "string":
        return (1, value)
    return (2, json.dumps(value, sort_keys=True))


def _merge(record: dict[str, Any], data: dict[str, Any]) -> None:
    for name, value in data.items():
        if isinstance(value, dict) and isinstance(record.get(name), dict):
            _merge(record[name], value)
        else:
            record[name] = value
