"""Rule handlers, and the one place that states their order: ``build_router``.

handlers/ imports only the public API (``webhook``: the router, matchers, messages and
replies), ``webhook.config.tomlfile`` and the standard library: business rules never see a
store, an HTTP client or the crypto.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from handlers.builtins import builtin_routers
from handlers.rules import load_rules
from webhook.config.tomlfile import load_toml
from webhook.errors import ConfigError
from webhook.routing.router import Router

__all__ = ["build_router", "import_router"]


def build_router(rules_path: str | None, routers: Sequence[str] = ()) -> Router:
    """The router the server (and ``wxpush rules test``) uses. Priority, first to last:

    1. Python routers named in wxpush.toml's ``[server] routers`` ("module:attribute");
    2. the rules file's ``[[rule]]`` tables, in file order;
    3. Python handlers of this package, if you add some: ``router.include(orders.router)``;
    4. the built-ins, each configurable or turned off under ``[builtins.*]``: welcome
       (user_enter_tempsession), handoff (人工 / 转人工 / human), fallback (text no rule matched).

    No rules file configured: an empty router, so the server only acknowledges pushes.
    Raises ConfigError (file:line: key: problem) for a bad file.
    """
    router = Router(name="wxpush")
    for spec in routers:
        router.include(import_router(spec))
    if rules_path is None:
        return router
    doc = load_toml(rules_path)
    rules = Router(name="rules")
    load_rules(doc, rules)
    router.include(rules)
    for builtin in builtin_routers(doc):
        router.include(builtin)
    return router


def import_router(spec: str) -> Router:
    """The Router at ``module:attribute`` (attribute defaults to ``router``)."""
    module_name, _, attr = spec.partition(":")
    try:
        router = getattr(importlib.import_module(module_name), attr or "router")
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import router {spec!r}: {exc}", key="routers") from None
    if not isinstance(router, Router):
        raise ConfigError(f"{spec!r} is not a webhook.routing.Router", key="routers")
    return router
