"""Rule handlers, and the one place that states their order: ``build_router``.

handlers/ imports only webhook.messages, webhook.routing, webhook.tomlfile, webhook.errors and
the standard library: business rules never see a store, an HTTP client or the crypto.
"""

from __future__ import annotations

from webhook.routing import Router
from webhook.tomlfile import load_toml

from handlers.builtins import builtin_routers
from handlers.rules import load_rules

__all__ = ["build_router"]


def build_router(rules_path: str | None) -> Router:
    """The router the server uses. Priority, first to last (routers named in wxpush.toml's
    ``[server] routers`` come before all of these, see webhook.app.load_router):

    1. the rules file's ``[[rule]]`` tables, in file order;
    2. Python handlers of this package, if you add some: ``router.include(orders.router)``;
    3. the built-ins, each configurable or turned off under ``[builtins.*]``: welcome
       (user_enter_tempsession), handoff (人工 / 转人工 / human), fallback (text no rule matched).

    No rules file configured: an empty router, so the server only acknowledges pushes.
    Raises ConfigError (file:line: key: problem) for a bad file.
    """
    router = Router(name="wxpush")
    if rules_path is None:
        return router
    doc = load_toml(rules_path)
    rules = Router(name="rules")
    load_rules(doc, rules)
    router.include(rules)
    for builtin in builtin_routers(doc):
        router.include(builtin)
    return router
