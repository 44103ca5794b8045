"""Built-in handlers, configured (or turned off) under ``[builtins.*]`` of the rules file.

welcome on user_enter_tempsession, hand-off to a human agent, and a fallback for messages no
rule matched. They are ordinary Python handlers: read them as examples for your own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.rules import section_error, strings, template
from webhook import Context, EnterSessionEvent, Message, Router, TextReply, exact, keyword, msgtype
from webhook.config.tomlfile import TomlFile, known_keys
from webhook.errors import ConfigError

__all__ = ["WELCOME_TEXT", "HANDOFF_KEYWORDS", "FALLBACK_TEXT", "welcome_router",
           "handoff_router", "fallback_router", "builtin_routers"]

WELCOME_TEXT = "您好，请问有什么可以帮您？"
HANDOFF_KEYWORDS = ("人工", "转人工", "human")
FALLBACK_TEXT = "抱歉，我没有理解您的问题。回复“人工”可转接人工客服。"
_KEYS = {
    "welcome": ("enabled", "text", "session_from"),
    "handoff": ("enabled", "keywords", "exact", "text"),
    "fallback": ("enabled", "text", "msgtypes"),
}


def welcome_router(*, text: str = WELCOME_TEXT,
                   by_session_from: Mapping[str, str] | None = None) -> Router:
    """Greet a customer who opens the chat; the greeting may depend on the button's
    ``session-from`` (templates may use {openid} and {session_from})."""
    router = Router()
    greetings = dict(by_session_from or {})

    @router.enter_session(name="builtin.welcome")
    def welcome(message: EnterSessionEvent, ctx: Context) -> TextReply:
        chosen = greetings.get(message.session_from, text)
        return TextReply(chosen.format_map({"openid": message.openid,
                                            "session_from": message.session_from}))

    return router


def handoff_router(*, keywords: tuple[str, ...] = HANDOFF_KEYWORDS, exact_words: tuple[str, ...] = (),
                   text: str = "") -> Router:
    """Hand the customer to a human agent (answered passively with transfer_customer_service);
    ``text``, if any, is also sent, e.g. "正在为您转接人工客服"."""
    router = Router()
    matchers = [m for m in (keyword(*keywords) if keywords else None,
                            exact(*exact_words) if exact_words else None) if m is not None]
    matcher = matchers[0] if len(matchers) == 1 else matchers[0] | matchers[1]

    def handoff(message: Message, ctx: Context) -> TextReply:
        return TextReply(text.format_map({"openid": message.openid}))

    router.add(matcher, handoff if text else None, name="builtin.handoff", transfer=True)
    return router


def fallback_router(*, text: str = FALLBACK_TEXT, msgtypes: tuple[str, ...] = ("text",)) -> Router:
    """Answer messages that no rule matched; events are never answered here."""
    router = Router()

    @router.fallback(msgtype(*msgtypes), name="builtin.fallback")
    def fallback(message: Message, ctx: Context) -> TextReply:
        return TextReply(text.format_map({"openid": message.openid}))

    return router


def builtin_routers(doc: TomlFile) -> list[Router]:
    """The enabled built-ins, configured by ``[builtins.*]``, in order welcome, handoff, fallback."""
    section = doc.data.get("builtins", {})
    if not isinstance(section, dict):
        raise section_error(doc, "must be a table of [builtins.welcome], [builtins.handoff], "
                            "[builtins.fallback]", "builtins")
    for name in section:
        if name not in _KEYS:
            raise section_error(doc, f"unknown built-in (known: {', '.join(_KEYS)})",
                                f"builtins.{name}")
    makers = {"welcome": welcome_router, "handoff": handoff_router, "fallback": fallback_router}
    configs = {name: _config(doc, name, section.get(name, {})) for name in _KEYS}
    return [makers[name](**config) for name, config in configs.items() if config is not None]


def _config(doc: TomlFile, name: str, raw: Any) -> dict[str, Any] | None:
    """Keyword arguments for the built-in's router, or None when it is turned off."""
    table = f"builtins.{name}"

    def fail(problem: str, key: str | None = None) -> ConfigError:
        return doc.error(problem, table=table, key=key)

    known_keys(raw, _KEYS[name], fail)
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise fail("must be true or false", "enabled")
    fields = {"openid", "session_from"} if name == "welcome" else {"openid"}
    config: dict[str, Any] = {}
    if "text" in raw:
        config["text"] = template(raw["text"], "text", fields, fail)
    if name == "welcome" and "session_from" in raw:
        greetings = raw["session_from"]
        if not isinstance(greetings, dict) or not greetings:
            raise fail('must be a table: session-from value = "greeting"', "session_from")
        config["by_session_from"] = {value: template(text, "session_from", fields, fail)
                                     for value, text in greetings.items()}
    if name == "handoff" and ("keywords" in raw or "exact" in raw):
        config["keywords"] = strings(raw["keywords"], "keywords", fail) if "keywords" in raw else ()
        config["exact_words"] = strings(raw["exact"], "exact", fail) if "exact" in raw else ()
    if name == "fallback" and "msgtypes" in raw:
        config["msgtypes"] = strings(raw["msgtypes"], "msgtypes", fail)
        if "event" in config["msgtypes"]:
            raise fail("the fallback never answers events (the welcome answers "
                       "user_enter_tempsession)", "msgtypes")
    return config if enabled else None
