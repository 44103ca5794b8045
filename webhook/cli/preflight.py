"""What ``wxpush serve`` checks before it starts a process, in one function that ``wxpush
check-config`` calls too, so that a config check-config passes is one serve starts with:
the config, the environment the processes read (gunicorn's settings included), the store
(opened as serve opens it) and the router (the rules file and the Python routers, imported
as every process imports them).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

from webhook.cli.deliver import graceful_timeout
from webhook.cli.logs import log_level
from webhook.config.settings import Settings, config_path, load
from webhook.errors import ConfigError
from webhook.routing.router import Router
from webhook.store import open_store, require_durable

__all__ = ["Checked", "preflight", "placeholders", "is_placeholder", "gunicorn_settings",
           "GUNICORN_CONF"]

# gunicorn's settings ship in the package, so that wxpush serve works wherever it is installed.
GUNICORN_CONF = "webhook.server.gunicorn_conf"

# The values wxpush.example.toml ships with: a server started on them answers nothing right.
EXAMPLE_VALUES = {
    "appid": "wx0123456789abcdef",
    "secret": "replace-with-your-appsecret",
    "token": "wxpushdemotoken",
    "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
}
_WHERE = {
    "appid": "the AppID (开发 → 开发管理 → 开发设置)",
    "secret": "the AppSecret (开发 → 开发管理 → 开发设置), or no reply can be sent",
    "token": "the console's Token (开发 → 开发管理 → 消息推送)",
    "encoding_aes_key": "the console's EncodingAESKey (开发 → 开发管理 → 消息推送)",
}


@dataclass(frozen=True, slots=True)
class Checked:
    """A config that passed: its settings (``path`` absolute), whether its store journals
    pushes (SQLite: serve runs a delivery process) and the router every process will build."""

    settings: Settings
    journaled: bool
    store_existed: bool
    router: Router


def preflight(config: str | None, *, allow_volatile: bool = False) -> Checked:
    """Raises WxpushError (one line: ConfigError, StoreError) at the first problem."""
    from handlers import build_router

    path = os.path.abspath(config_path(config))
    settings = load(path)
    log_level()                             # WXPUSH_LOG_LEVEL
    graceful_timeout()                      # WXPUSH_GRACEFUL_TIMEOUT
    gunicorn_settings()                     # WXPUSH_WORKERS, WXPUSH_THREADS, ...
    url = settings.server.store
    existed = not url.startswith("sqlite:") or os.path.exists(url[len("sqlite:///"):])
    store = open_store(url)
    try:
        require_durable(store, url,
                        allow_volatile=allow_volatile or settings.server.allow_volatile_redis)
        journaled = store.journaled
    finally:
        store.close()
    router = build_router(settings.server.rules, settings.server.routers, config=path)
    router.compile()
    return Checked(settings=settings, journaled=journaled, store_existed=existed, router=router)


def gunicorn_settings() -> ModuleType:
    """gunicorn's settings as ``wxpush serve`` gives them, read from the ``WXPUSH_*`` variables
    (one that is not a number is one line here, not a traceback from gunicorn)."""
    try:
        return importlib.import_module(GUNICORN_CONF)
    except ValueError as exc:
        raise ConfigError(f"a WXPUSH_* variable of gunicorn's is not a number ({exc})",
                          file="environment") from None


def is_placeholder(key: str, value: str | None) -> bool:
    """``value`` of an app's ``key`` is left as the example has it, or a ``replace-with-...``."""
    return bool(value) and (value == EXAMPLE_VALUES[key] or value.startswith("replace-with-"))


def placeholders(settings: Settings) -> list[str]:
    """One warning per placeholder value of an app, and for an app without a secret."""
    warnings = []
    for app in settings.apps.values():
        values = {"appid": app.appid, "secret": app.secret, "token": app.token,
                  "encoding_aes_key": app.encoding_aes_key}
        for key, value in values.items():
            if is_placeholder(key, value):
                warnings.append(f"app {app.appid}: {key} is still a placeholder: set "
                                f"{_WHERE[key]}")
        if not app.secret:
            warnings.append(f"app {app.appid}: no secret: pushes are answered, but no reply "
                            "can be sent (set secret or secret_env)")
    return warnings
