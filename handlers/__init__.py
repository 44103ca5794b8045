"""Rule handlers, and the one place that states their order: ``build_router``.

handlers/ imports only the public API (``webhook``: the router, matchers, messages and
replies), ``webhook.config.tomlfile`` and the standard library: business rules never see a
store, an HTTP client or the crypto. It holds the built-in rules only: a bot's own handlers
live in its own project, in a module beside wxpush.toml (or any installed one) named in
``[server] routers``.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from handlers.builtins import builtin_routers
from handlers.rules import load_rules
from webhook.config.tomlfile import load_toml
from webhook.errors import ConfigError
from webhook.routing.router import Router

__all__ = ["build_router", "import_router"]


def build_router(rules_path: str | None, routers: Sequence[str] = (), *,
                 config: str | None = None) -> Router:
    """The router the server (and ``wxpush rules test``) uses. Priority, first to last:

    1. Python routers named in wxpush.toml's ``[server] routers`` ("module:attribute"), your
       own handlers: a module beside ``config`` (the wxpush.toml naming them) or installed;
    2. the rules file's ``[[rule]]`` tables, in file order;
    3. the built-ins, each configurable or turned off under ``[builtins.*]``: welcome
       (user_enter_tempsession), handoff (人工 / 转人工 / human), fallback (text no rule matched).

    No rules file configured: an empty router, so the server only acknowledges pushes.
    Raises ConfigError (file:line: key: problem) for a bad file or a router that does not
    import.
    """
    router = Router(name="wxpush")
    for spec in routers:
        router.include(import_router(spec, config=config))
    if rules_path is None:
        return router
    doc = load_toml(rules_path)
    rules = Router(name="rules")
    load_rules(doc, rules)
    router.include(rules)
    for builtin in builtin_routers(doc):
        router.include(builtin)
    return router


def import_router(spec: str, *, config: str | None = None) -> Router:
    """The Router at ``module:attribute`` (attribute defaults to ``router``).

    With ``config``, the directory of that file is importable (appended to ``sys.path``, so an
    installed module of the same name wins; a bot's module beside wxpush.toml needs no
    PYTHONPATH, in whichever process loads the config), and a problem names the file and the
    line of ``routers``."""
    module_name, _, attr = spec.partition(":")
    directory = os.path.dirname(os.path.abspath(config)) if config else None
    if directory and directory not in sys.path:
        sys.path.append(directory)

    def fail(problem: str) -> ConfigError:
        line = load_toml(config).line_of("server", key="routers") if config else None
        return ConfigError(f"cannot import router {spec!r}: {problem}", file=config, line=line,
                           key="routers")

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise fail(_raised_at(exc)) from None     # the module imports something missing
        where = f"beside {os.path.basename(config)} ({directory}) or installed" if config \
            else "installed"
        raise fail(f"no module named {exc.name!r} {where}") from None
    except Exception as exc:                          # the module's own code failed
        raise fail(_raised_at(exc)) from None
    router = getattr(module, attr or "router", None)
    if not isinstance(router, Router):
        problem = (f"{module_name} has no attribute {attr or 'router'!r}" if router is None
                   else f"{module_name}.{attr or 'router'} is not a webhook.Router")
        hidden = _shadowed(module, directory)
        raise fail(problem + (f" ({module.__file__} hides your {hidden}: rename yours)"
                              if hidden else ""))
    return router


def _raised_at(exc: BaseException) -> str:
    """``file:line: Type: message`` of an exception raised while importing a module."""
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}: {type(exc).__name__}: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "importlib" not in f.filename] or frames
    at = f"{own[-1].filename}:{own[-1].lineno}: " if own else ""
    return f"{at}{type(exc).__name__}: {' '.join(str(exc).split())}"    # on one line


def _shadowed(module: ModuleType, directory: str | None) -> str | None:
    """The module beside the config that the one imported (from elsewhere, first on the path)
    hides, if any."""
    if directory is None:
        return None
    top = module.__name__.split(".")[0]
    imported = getattr(sys.modules.get(top), "__file__", None)
    for candidate in (os.path.join(directory, top + ".py"),
                      os.path.join(directory, top, "__init__.py")):
        if os.path.isfile(candidate) and candidate != imported:
            return candidate
    return None
