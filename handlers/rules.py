"""The keyword bot: ``[[rule]]`` tables of the rules file, in file order (see rules.example.toml).

Every problem is a ConfigError naming the file and line. Template fields ({openid}, a regex's
named groups, {session_from} for the enter-session event) are checked when the file loads, so a
rule that loaded cannot fail when it runs, unless it asks the cloud first (``function`` or
``query``, handlers/actions.py): then a failed call or a missing {result...} field answers the
rule's ``reply.on_error``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from handlers.actions import ACTION_KEYS, Action, on_error_reply, parse_action, rule_handler
from handlers.templates import RESULT, Fail, template
from webhook import (MESSAGE, ConfigError, ImageReply, LinkReply, Matcher, MiniProgramPageReply,
                     Reply, Router, TextReply, app, event, exact, keyword, msgtype, prefix, regex,
                     session_from)
from webhook.config.tomlfile import TomlFile, known_keys
from webhook.push.messages import ENTER_SESSION_EVENT

__all__ = ["RULE_KEYS", "TOP_KEYS", "load_rules", "section_error", "strings", "template"]

TOP_KEYS = ("rule", "builtins")
RULE_KEYS = ("name", "enabled", "keywords", "exact", "prefix", "regex", "event", "msgtype",
             "session_from", "apps", "reply", "replies", "transfer", "continue") + ACTION_KEYS
TEXT_KEYS = ("keywords", "exact", "prefix", "regex")
_WORDS = {"keywords": keyword, "exact": exact, "prefix": prefix}
# Reply kind -> (class, allowed keys, required keys, keys that are templates)
_REPLIES: dict[str, tuple[type[Reply], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "link": (LinkReply, ("title", "description", "url", "thumb_url"), ("title", "url"),
             ("title", "description", "url")),
    "miniprogrampage": (MiniProgramPageReply, ("title", "pagepath", "thumb_media_id", "thumb_path"),
                        ("title", "pagepath"), ("title", "pagepath")),
}


def load_rules(doc: TomlFile, router: Router) -> None:
    """Add the file's enabled rules to ``router`` in file order."""
    unknown = [key for key in doc.data if key not in TOP_KEYS]
    if unknown:
        raise section_error(doc, "unknown section (expected [[rule]] tables and [builtins.*])",
                            unknown[0])
    tables = doc.data.get("rule", [])
    if not isinstance(tables, list):
        raise doc.error("rules are [[rule]] tables", key="rule")
    seen: dict[str, int] = {}
    base = Path(doc.path).resolve().parent  # reply files are relative to the rules file
    for index, table in enumerate(tables):
        _add_rule(doc, index, table, router, seen, base)


def section_error(doc: TomlFile, problem: str, section: str) -> ConfigError:
    """An error about a whole ``[section]`` (or a top-level key), at its line."""
    line = doc.line_of(section) or doc.line_of(None, None, section.rpartition(".")[2])
    return ConfigError(problem, file=doc.path, line=line, key=section)


def strings(value: Any, key: str, fail: Fail) -> tuple[str, ...]:
    """A non-empty list of non-empty strings (a single string is accepted too)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or \
            not all(isinstance(item, str) and item.strip() for item in items):
        raise fail("must be a non-empty list of non-empty strings", key)
    return tuple(items)


def _add_rule(doc: TomlFile, index: int, table: Any, router: Router, seen: dict[str, int],
              base: Path) -> None:
    def fail(problem: str, key: str | None = None) -> ConfigError:
        return doc.error(problem, table="rule", index=index, key=key)

    known_keys(table, RULE_KEYS, fail)
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail('name is required: a short unique label, e.g. name = "hours"',
                   "name" if "name" in table else None)
    if name in seen:
        first = doc.line_of("rule", seen[name], "name")
        raise fail(f"duplicate rule name {name!r} (first used at line {first})", "name")
    seen[name] = index
    flags = {key: table.get(key, default) for key, default in
             (("enabled", True), ("transfer", False), ("continue", False))}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise fail("must be true or false", key)
    matcher, fields, is_event = _matcher(table, fail)
    if flags["transfer"] and is_event:
        raise fail("WeChat hands messages, not events, to human agents", "transfer")
    action = parse_action(table, fields, fail)
    reply, on_error = _on_error(table, fields, action, fail)
    replies = _replies({**table, **reply}, fields, base, fail,
                       structured=frozenset({RESULT}) if action else frozenset())
    if not replies and not flags["transfer"] and not (action and "function" in table):
        raise fail("missing reply: give reply = {...}, replies = [...] or transfer = true")
    if not flags["enabled"]:
        return
    handler = rule_handler(action, replies, on_error) if action or replies else None
    router.add(matcher, handler, name=name, continue_=flags["continue"],
               transfer=flags["transfer"])


def _on_error(table: Mapping[str, Any], fields: set[str], action: Action | None,
              fail: Fail) -> tuple[dict[str, Any], Any]:
    """The rule's ``reply`` without its ``on_error``, and the on_error reply (or None)."""
    reply = table.get("reply")
    if not isinstance(reply, dict) or "on_error" not in reply:
        for item in table.get("replies", []) if isinstance(table.get("replies"), list) else []:
            if isinstance(item, dict) and "on_error" in item:
                raise fail("on_error goes in reply = {...} (reply.on_error = \"...\")", "replies")
        return {}, None
    if action is None:
        raise fail("on_error answers a failed function or query: this rule has neither",
                   "reply.on_error")
    rest = {key: value for key, value in reply.items() if key != "on_error"}
    return ({"reply": rest} if rest else {"reply": None}), \
        on_error_reply(reply["on_error"], fields, fail)


def _matcher(table: Mapping[str, Any], fail: Fail) -> tuple[Matcher, set[str], bool]:
    """The rule's matcher, the template fields it offers, and whether it matches events."""
    parts: list[Matcher] = []
    fields = {"openid"}
    given = [key for key in TEXT_KEYS if key in table]
    if len(given) > 1:
        raise fail("give only one of keywords, exact, prefix, regex", given[1])
    for key in given:
        if key == "regex":
            if not isinstance(table[key], str) or not table[key]:
                raise fail("must be a regular expression in a string ('...' avoids escapes)", key)
            try:
                pattern = re.compile(table[key])
            except re.error as exc:
                raise fail(f"bad regex: {exc}", key) from None
            parts.append(regex(pattern))
            fields |= set(pattern.groupindex)
        else:
            parts.append(_WORDS[key](*strings(table[key], key, fail)))
    types = strings(table["msgtype"], "msgtype", fail) if "msgtype" in table else None
    name = table.get("event")
    if name is not None and (not isinstance(name, str) or not name):
        raise fail(f'must be an event name, e.g. "{ENTER_SESSION_EVENT}"', "event")
    if "session_from" in table:
        if name not in (None, ENTER_SESSION_EVENT):
            raise fail(f"session_from only comes with event = \"{ENTER_SESSION_EVENT}\"",
                       "session_from")
        name = ENTER_SESSION_EVENT
        parts.append(session_from(*strings(table["session_from"], "session_from", fail)))
    if given and (name or (types and types != ("text",))):
        raise fail(f"{given[0]} match text messages; this rule also asks for "
                   f"{'event ' + repr(name) if name else 'msgtype ' + repr(list(types or ()))}",
                   given[0])
    if name:
        if types and types != ("event",):
            raise fail('an event rule has msgtype "event" (or none)', "msgtype")
        parts.append(event(name))
        if name == ENTER_SESSION_EVENT:
            fields.add("session_from")
    elif types:
        parts.append(msgtype(*types))
    elif not given:
        parts.append(MESSAGE)  # no condition on the type: any text, image or card
    if "apps" in table:
        parts.append(app(*strings(table["apps"], "apps", fail)))
    matcher = parts[0]
    for part in parts[1:]:
        matcher = matcher & part
    return matcher, fields, bool(name) or "event" in (types or ())


def _replies(table: Mapping[str, Any], fields: set[str], base: Path, fail: Fail, *,
             structured: frozenset[str] = frozenset()
             ) -> list[Callable[[Mapping[str, Any]], Reply]]:
    given = {key: table[key] for key in ("reply", "replies")
             if key in table and table[key] is not None}
    if len(given) == 2:
        raise fail("give reply = {...} or replies = [...], not both", "replies")
    if "reply" in given:
        return [_reply(given["reply"], "reply", fields, base, fail, structured)]
    if "replies" in given:
        items = given["replies"]
        if not isinstance(items, list) or not items:
            raise fail('must be a list of reply tables, e.g. [{text = "a"}, {text = "b"}]',
                       "replies")
        return [_reply(item, "replies", fields, base, fail, structured) for item in items]
    return []


def _reply(value: Any, key: str, fields: set[str], base: Path, fail: Fail,
           structured: frozenset[str] = frozenset()) -> Callable[[Mapping[str, Any]], Reply]:
    """One reply table -> a function from template values to the Reply (``structured``: the
    fields templates may walk into, ``result`` with an action)."""
    kinds = ("text", "image") + tuple(_REPLIES)
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in kinds:
        raise fail(f"a reply is a table with one of {', '.join(kinds)}, "
                   f'e.g. {key} = {{text = "..."}}', key)
    kind, body = next(iter(value.items()))
    where = f"{key}.{kind}"
    if kind == "text":
        content = template(body, where, fields, fail, structured=structured)
        return lambda values: TextReply(content.format_map(values))
    if kind == "image":
        return _image(body, where, base, fail)
    cls, allowed, required, templated = _REPLIES[kind]
    if not isinstance(body, dict):
        raise fail(f"must be a table with {', '.join(allowed)}", where)
    for name in body:
        if name not in allowed or not isinstance(body[name], str):
            raise fail(f"{name}: unknown key or not a string (known: {', '.join(allowed)})", where)
    missing = [name for name in required if not body.get(name)]
    if missing:
        raise fail(f"{missing[0]} is required", where)
    args = dict(body)
    if kind == "link":
        args.setdefault("description", "")
        if not args["url"].startswith(("http://", "https://")):
            raise fail("url must start with http:// or https://", where)
    else:
        if ("thumb_media_id" in args) == ("thumb_path" in args):
            raise fail("give exactly one of thumb_media_id or thumb_path", where)
        if "thumb_path" in args:
            args["thumb_path"] = _file(args["thumb_path"], where, base, fail)
    for name in templated:
        if name in args:
            args[name] = template(args[name], where, fields, fail, structured=structured)
    return lambda values: cls(**{name: text.format_map(values) if name in templated else text
                                 for name, text in args.items()})


def _image(body: Any, where: str, base: Path,
           fail: Fail) -> Callable[[Mapping[str, Any]], Reply]:
    if isinstance(body, str):
        body = {"path": body}
    if not isinstance(body, dict) or len(body) != 1 or next(iter(body)) not in ("path", "media_id") \
            or not isinstance(next(iter(body.values())), str):
        raise fail('give a file path ("menu.png", {path = "..."}) or {media_id = "..."}', where)
    reply = ImageReply(path=_file(body["path"], where, base, fail)) if "path" in body \
        else ImageReply(media_id=body["media_id"])
    return lambda values: reply


def _file(path: str, where: str, base: Path, fail: Fail) -> str:
    """A path relative to the rules file, which must exist now."""
    resolved = base / path
    if not resolved.is_file():
        raise fail(f"file not found: {resolved}", where)
    return str(resolved)
