"""Rule actions: a rule may ask the app's cloud before it answers.

    function = { name = "orderStatus", data = { order = "{order}", openid = "{openid}" } }
    query = { collection = "faq", where = { key = "shipping" }, limit = 1 }

The function runs in the push's app's ``cloud_env`` with ``data`` as its event (strings in it
are templates); the query's records are its result (an empty one counts as a failure). The
reply's templates reach into the result (``{result.status}``, ``{result[0].answer}``). When
the call fails (the function throws, times out after WeChat's 5 s, does not exist; the
query matches nothing) or the result lacks a field a template asks for, the rule answers
``reply.on_error`` instead (or nothing), and a warning names the rule. Actions run after
the answer to WeChat, in the delivery process, and their replies go out once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from handlers.templates import RESULT, Fail, MissingField, Result, template
from webhook import Context, HandlerAPI, Message, Reply, TextReply, WxpushError
from webhook.cloudquery import collection
from webhook.logsafe import shown

__all__ = ["ACTION_KEYS", "Action", "parse_action", "rule_handler"]

ACTION_KEYS = ("function", "query")
_FUNCTION_KEYS = ("name", "data")
_QUERY_KEYS = ("collection", "where", "limit", "skip", "order_by")

Action = Callable[[HandlerAPI, Mapping[str, Any]], Any]
Build = Callable[[Mapping[str, Any]], Reply]


class NothingFound(Exception):
    """A rule's query matched no record."""


def parse_action(table: Mapping[str, Any], fields: set[str], fail: Fail) -> Action | None:
    """The rule's ``function`` or ``query``, checked now (templates, names, limits)."""
    given = [key for key in ACTION_KEYS if key in table]
    if len(given) > 1:
        raise fail("give function or query, not both", given[1])
    if not given:
        return None
    key = given[0]
    spec = table[key]
    allowed = _FUNCTION_KEYS if key == "function" else _QUERY_KEYS
    if not isinstance(spec, dict):
        raise fail(f"must be a table: {key} = {{ {', '.join(f'{k} = ...' for k in allowed)} }}",
                   key)
    for name in spec:
        if name not in allowed:
            raise fail(f"{name}: unknown key (known: {', '.join(allowed)})", key)
    if key == "function":
        return _function(spec, fields, fail)
    return _query(spec, fields, fail)


def _function(spec: Mapping[str, Any], fields: set[str], fail: Fail) -> Action:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise fail("name is required: the cloud function to call", "function")
    data = _data(spec.get("data", {}), "function.data", fields, fail)
    if not isinstance(data, dict):
        raise fail("data must be a table (the function's event)", "function")
    return lambda wechat, values: wechat.call_function(name, _filled(data, values))


def _query(spec: Mapping[str, Any], fields: set[str], fail: Fail) -> Action:
    name = spec.get("collection")
    if not isinstance(name, str) or not name:
        raise fail("collection is required", "query")
    where = _data(spec.get("where", {}), "query.where", fields, fail)
    if not isinstance(where, dict):
        raise fail("where must be a table of field = value", "query")
    order = spec.get("order_by", [])
    order = [order] if isinstance(order, str) else order
    if not isinstance(order, list) or len(order) > 2 or not all(isinstance(o, str) for o in order):
        raise fail('order_by is a field name, or [field, "asc" or "desc"]', "query")
    options = {"limit": spec.get("limit"), "skip": spec.get("skip")}

    def build(values: Mapping[str, Any]) -> Any:
        query = collection(name).where(_filled(where, values))
        if order:
            query = query.order_by(*order)
        if options["skip"] is not None:
            query = query.skip(options["skip"])
        if options["limit"] is not None:
            query = query.limit(options["limit"])
        return query.get()

    try:   # the builder's own checks, with every field standing in
        build({field: "x" for field in fields})
    except ValueError as exc:
        raise fail(str(exc), "query") from None

    def run(wechat: HandlerAPI, values: Mapping[str, Any]) -> Any:
        records = wechat.database(build(values))
        if not records:
            raise NothingFound()
        return records
    return run


def _data(value: Any, where: str, fields: set[str], fail: Fail) -> Any:
    """A TOML value as JSON, its strings checked as templates (an empty one is left as is)."""
    if isinstance(value, dict):
        return {key: _data(item, where, fields, fail) for key, item in value.items()}
    if isinstance(value, list):
        return [_data(item, where, fields, fail) for item in value]
    if isinstance(value, str):
        return template(value, where, fields, fail) if value else value
    if isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise fail(f"{value!r} cannot be sent as JSON (use a string)", where)


def _filled(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        return {key: _filled(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, values) for item in value]
    return value.format_map(values) if isinstance(value, str) else value


def on_error_reply(value: Any, fields: set[str], fail: Fail) -> Build:
    """``reply.on_error``: the text sent when the action fails (its own fields only)."""
    text = template(value, "reply.on_error", fields, fail)
    return lambda values: TextReply(text.format_map(values))


def rule_handler(action: Action | None, replies: list[Build], on_error: Build | None
                 ) -> Callable[[Message, Context], list[Reply]]:
    """A rule's handler: its replies, filled in after its action (if any) answered."""
    def handle(message: Message, ctx: Context) -> list[Reply]:
        values = {"openid": message.openid,
                  "session_from": getattr(message, "session_from", ""), **ctx.match}
        try:
            if action is not None:
                values = {**values, RESULT: Result(action(ctx.wechat, values))}
            return [build(values) for build in replies]
        except (WxpushError, NothingFound, MissingField) as exc:
            _log_failure(ctx, exc, "answered on_error" if on_error else "no reply")
            return [on_error(values)] if on_error else []
    return handle


def _log_failure(ctx: Context, exc: Exception, answer: str) -> None:
    if isinstance(exc, MissingField):
        why = f"the result has no {exc.path}"
    elif isinstance(exc, NothingFound):
        why = "the query matched nothing"
    else:   # a function's own message may quote the customer: DEBUG only
        why = f"errcode={getattr(exc, 'errcode', '-')}"
        ctx.logger.debug("rule action failed rule=%s error=%s", ctx.rule, shown(exc, 200))
    ctx.logger.warning("rule action failed rule=%s appid=%s error=%s %s; %s", ctx.rule,
                       ctx.appid, type(exc).__name__, why, answer)
