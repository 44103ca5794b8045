"""Settings: frozen dataclasses loaded from ``wxpush.toml``; the only reader of the environment.

Secrets may live in the file or, better, in environment variables named by ``*_env`` keys
(``secret_env = "SHOP_SECRET"``). Every problem is reported as ``file:line: key: problem``.
Relative paths (the rules file, a SQLite store) are taken relative to the config file.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webhook.config.cloud import (CLOUD_APP_KEYS, Bridge, ClientConfig, app_cloud, check_bridges,
                                  clients)
from webhook.config.tomlfile import TomlFile, known_keys, load_toml
from webhook.errors import ConfigError, UnknownApp
from webhook.passwords import FORMAT, parse_hash

__all__ = ["AppConfig", "ServerConfig", "Settings", "Bridge", "ClientConfig", "ConsoleConfig",
           "Operator", "load", "config_path", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = "wxpush.toml"
DEFAULT_STORE = "sqlite:///wxpush.db"
FORMATS = ("xml", "json")
MODES = ("plaintext", "compatible", "safe")
_AES_KEY = re.compile(r"^[A-Za-z0-9]{43}$")
_APPID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
SESSION_TTL = 12 * 3600   # seconds an operator stays logged in
_OPERATOR = re.compile(r"^[\w.@\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class AppConfig:
    """One mini program / official account, served at ``/wechat/{appid}``."""

    appid: str
    token: str = field(repr=False)
    secret: str = field(default="", repr=False)
    encoding_aes_key: str | None = field(default=None, repr=False)
    previous_encoding_aes_key: str | None = field(default=None, repr=False)
    format: str = "xml"
    mode: str = "safe"
    # cloud development (webhook.config.cloud)
    cloud_env: str | None = None
    files: tuple[str, ...] = ()          # file ID prefixes served at /files/{appid}/...
    bridge: tuple[Bridge, ...] = ()      # other apps' functions this app's users may call


@dataclass(frozen=True, slots=True)
class ServerConfig:
    api_base: str = "https://api.weixin.qq.com"
    store: str = DEFAULT_STORE
    rules: str | None = None
    timestamp_tolerance: int = 300
    max_body: int = 64 * 1024
    token_endpoint: str = "stable"
    token_refresh_ahead: int = 300
    handler_budget: float = 3.0
    dedupe_ttl: int = 86400
    senders: int = 128
    deliveries: int = 2
    handler_threads: int = 8
    send_attempts: int = 8
    handle_attempts: int = 5
    session_ttl: int = 7 * 86400
    opendata_max_age: int = 0
    lease: int = 30
    stall_timeout: int = 60
    allow_volatile_redis: bool = False
    retry_delay: float = 1.0
    routers: tuple[str, ...] = ()
    # /apps/{appid}/... relay requests to WeChat: per client address (and app), and per app
    rate_per_client: float = 1.0
    burst_per_client: int = 20
    rate_per_app: float = 20.0
    burst_per_app: int = 200
    # Peers whose X-Forwarded-For names the client: the nginx on this host
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # Days of conversation history the console shows (0: none is kept)
    history_days: int = 7
    # Operations: /metrics, log lines, /readyz's limits
    metrics: str = "on"
    log_format: str = "text"
    log_content: bool = False
    ready_backlog_age: int = 600
    ready_dead_letters: int = 1000

    @property
    def metrics_port(self) -> int | None:
        """The port of ``metrics = "port:N"``: /metrics on a listener of its own."""
        return int(self.metrics[5:]) if self.metrics.startswith("port:") else None


@dataclass(frozen=True, slots=True)
class Operator:
    """Someone who may log in to the console; ``apps`` None: every app."""

    name: str
    password_hash: str = field(repr=False)
    apps: tuple[str, ...] | None = None

    def sees(self, appid: str) -> bool:
        return self.apps is None or appid in self.apps


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """``[console]``: on only when it names an operator."""

    operators: tuple[Operator, ...] = ()
    session_ttl: int = SESSION_TTL

    def operator(self, name: str) -> Operator | None:
        return next((o for o in self.operators if o.name == name), None)


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerConfig = field(default_factory=ServerConfig)
    apps: Mapping[str, AppConfig] = field(default_factory=dict)
    path: str | None = None
    clients: tuple[ClientConfig, ...] = ()    # the token service's API keys
    console: ConsoleConfig = field(default_factory=ConsoleConfig)

    def app(self, appid: str) -> AppConfig:
        """The app served at ``/.../{appid}``; UnknownApp (404) if none is configured."""
        app = self.apps.get(appid)
        if app is None:
            raise UnknownApp("unknown appid")
        return app


# (key, type, check, what it must be) for [server]
_SERVER_KEYS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "api_base": (str, lambda v: v.startswith(("http://", "https://")), "an http(s) URL"),
    "store": (str, lambda v: v.startswith(("sqlite:///", "redis://", "rediss://")),
              "a sqlite:///path (three slashes, four for an absolute path) or "
              "redis://host:port/db URL"),
    "rules": (str, lambda v: bool(v), "a file path"),
    "timestamp_tolerance": (int, lambda v: v >= 0, "seconds >= 0 (0 turns the window off)"),
    "max_body": (int, lambda v: 1024 <= v <= 16 * 1024 * 1024, "bytes between 1024 and 16 MiB"),
    "token_endpoint": (str, lambda v: v in ("stable", "classic"), '"stable" or "classic"'),
    "token_refresh_ahead": (int, lambda v: 0 <= v < 7200, "seconds between 0 and 7199"),
    "handler_budget": ((int, float), lambda v: 0 < v <= 60, "seconds between 0 and 60"),
    "dedupe_ttl": (int, lambda v: v >= 60, "seconds >= 60"),
    "senders": (int, lambda v: 0 <= v <= 1024,
                "a count of sends in flight between 0 and 1024 (0: this process sends none)"),
    "deliveries": (int, lambda v: 1 <= v <= 64, "a process count between 1 and 64"),
    "handler_threads": (int, lambda v: 1 <= v <= 64, "a thread count between 1 and 64"),
    "send_attempts": (int, lambda v: 1 <= v <= 100, "a count between 1 and 100"),
    "handle_attempts": (int, lambda v: 1 <= v <= 100, "a count between 1 and 100"),
    "session_ttl": (int, lambda v: v >= 60, "seconds >= 60"),
    "opendata_max_age": (int, lambda v: v >= 0, "seconds >= 0 (0 turns the check off)"),
    "retry_delay": ((int, float), lambda v: 0 < v <= 600,
                    "seconds between 0 and 600 (first retry; doubles each time)"),
    "lease": (int, lambda v: 1 <= v <= 3600, "seconds between 1 and 3600"),
    "stall_timeout": (int, lambda v: 5 <= v <= 3600, "seconds between 5 and 3600"),
    "allow_volatile_redis": (bool, lambda v: True, "true or false"),
    "routers": (list, lambda v: all(isinstance(x, str) and x for x in v),
                'a list of "module:attribute" Python routers'),
    "rate_per_client": ((int, float), lambda v: 0 < v <= 100_000,
                        "requests a second, above 0 and at most 100000"),
    "burst_per_client": (int, lambda v: 1 <= v <= 1_000_000, "a count between 1 and 1000000"),
    "rate_per_app": ((int, float), lambda v: 0 < v <= 100_000,
                     "requests a second, above 0 and at most 100000"),
    "burst_per_app": (int, lambda v: 1 <= v <= 1_000_000, "a count between 1 and 1000000"),
    "trusted_proxies": (list, lambda v: all(_is_network(x) for x in v),
                        'a list of IP addresses or networks ("127.0.0.1", "10.0.0.0/8")'),
    "history_days": (int, lambda v: 0 <= v <= 365, "days between 0 and 365 (0 keeps none)"),
    "metrics": (str, lambda v: v in ("on", "off") or _is_port(v),
                '"on" (GET /metrics), "off", or "port:N" (/metrics on port N alone)'),
    "log_format": (str, lambda v: v in ("text", "json"), '"text" or "json" (one object a line)'),
    "log_content": (bool, lambda v: True, "true or false"),
    "ready_backlog_age": (int, lambda v: v >= 0,
                          "seconds >= 0 (0 turns the check off)"),
    "ready_dead_letters": (int, lambda v: v >= 0, "a count >= 0 (0 turns the check off)"),
}
_APP_KEYS = {"appid", "secret", "secret_env", "token", "token_env", "encoding_aes_key",
             "encoding_aes_key_env", "previous_encoding_aes_key", "previous_encoding_aes_key_env",
             "format", "mode"}


def config_path(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """``--config`` wins, then ``WXPUSH_CONFIG``, then ``./wxpush.toml``."""
    env = os.environ if env is None else env
    return explicit or env.get("WXPUSH_CONFIG") or DEFAULT_CONFIG


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Load and validate a config file; raises ConfigError naming file, line and key."""
    env = os.environ if env is None else env
    doc = load_toml(path)
    unknown = set(doc.data) - {"server", "apps", "clients", "console"}
    if unknown:
        key = sorted(unknown)[0]
        raise doc.error("unknown section (expected [server], [[apps]], [[clients]] and "
                        "[console])", key=key)
    server = _server(doc, Path(path).resolve().parent)
    apps_raw = doc.data.get("apps", [])
    if not isinstance(apps_raw, list) or not apps_raw:
        raise doc.error("at least one [[apps]] table is required", key="apps")
    apps: dict[str, AppConfig] = {}
    for index, raw in enumerate(apps_raw):
        app = _app(doc, index, raw, env)
        if app.appid in apps:
            raise doc.error(f"appid {app.appid!r} is configured twice", table="apps", index=index,
                            key="appid")
        apps[app.appid] = app
    check_bridges(doc, apps)
    return Settings(server=server, apps=apps, path=str(path), clients=clients(doc, apps),
                    console=_console(doc, apps))


def _server(doc: TomlFile, base: Path) -> ServerConfig:
    raw = doc.data.get("server", {})
    if not isinstance(raw, dict):
        raise doc.error("must be a table", key="server")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _SERVER_KEYS:
            raise doc.error(f"unknown key (known: {', '.join(sorted(_SERVER_KEYS))})",
                            table="server", key=key)
        kind, check, what = _SERVER_KEYS[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind) \
                or not check(value):
            raise doc.error(f"must be {what}, got {value!r}", table="server", key=key)
        values[key] = value
    for key in ("routers", "trusted_proxies"):
        if key in values:
            values[key] = tuple(values[key])
    if "rules" in values:
        values["rules"] = str(base / values["rules"])
    store = values.get("store", DEFAULT_STORE)
    if store.startswith("sqlite:///") and not store.startswith("sqlite:////"):
        relative = store[len("sqlite:///"):]
        if relative and relative != ":memory:":
            values["store"] = "sqlite:///" + str(base / relative)
    return ServerConfig(**values)


def _console(doc: TomlFile, apps: Mapping[str, AppConfig]) -> ConsoleConfig:
    def fail(problem: str, key: str | None = None) -> ConfigError:
        return doc.error(problem, table="console" if key else None, key=key or "console")

    raw = known_keys(doc.data.get("console", {}), ("operators", "session_ttl"), fail)
    ttl = raw.get("session_ttl", SESSION_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 60 <= ttl <= 30 * 86400:
        raise fail(f"must be seconds between 60 and 2592000, got {ttl!r}", "session_ttl")
    listed = raw.get("operators", [])
    if not isinstance(listed, list):
        raise fail("must be [[console.operators]] tables", "operators")
    operators: list[Operator] = []
    for index, entry in enumerate(listed):
        operator = _operator(doc, index, entry, apps)
        if any(o.name == operator.name for o in operators):
            raise doc.error(f"operator {operator.name!r} is named twice",
                            table="console.operators", index=index, key="name")
        operators.append(operator)
    return ConsoleConfig(operators=tuple(operators), session_ttl=ttl)


def _operator(doc: TomlFile, index: int, raw: Any, apps: Mapping[str, AppConfig]) -> Operator:
    def fail(problem: str, key: str | None = None) -> ConfigError:
        return doc.error(problem, table="console.operators", index=index, key=key)

    known_keys(raw, ("apps", "name", "password_hash"), fail)
    name = raw.get("name")
    if not isinstance(name, str) or not _OPERATOR.match(name):
        raise fail("name is required: up to 64 letters, digits, '.', '@', '_' or '-'",
                   "name" if "name" in raw else None)
    hashed = raw.get("password_hash")
    if not isinstance(hashed, str) or parse_hash(hashed) is None:
        raise fail(f"must be a hash printed by `wxpush console hash-password` ({FORMAT})",
                   "password_hash" if "password_hash" in raw else None)
    allowed = raw.get("apps")
    if allowed is None:
        return Operator(name, hashed)
    if not isinstance(allowed, list) or not allowed or not all(isinstance(a, str)
                                                               for a in allowed):
        raise fail("must be a non-empty list of appids", "apps")
    unknown = [a for a in allowed if a not in apps]
    if unknown:
        raise fail(f"appid {unknown[0]!r} is not configured in [[apps]]", "apps")
    return Operator(name, hashed, tuple(allowed))


def _is_port(value: str) -> bool:
    """``port:N`` with N a TCP port."""
    number = value.removeprefix("port:")
    return number != value and number.isascii() and number.isdigit() and 1 <= int(number) <= 65535


def _is_network(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _app(doc: TomlFile, index: int, raw: Any, env: Mapping[str, str]) -> AppConfig:
    def fail(problem: str, key: str | None) -> ConfigError:
        return doc.error(problem, table="apps", index=index, key=key)

    if not isinstance(raw, dict):
        raise fail("must be a table", None)
    for key, value in raw.items():
        if key in CLOUD_APP_KEYS:
            continue
        if key not in _APP_KEYS:
            raise fail(f"unknown key (known: {', '.join(sorted(_APP_KEYS | set(CLOUD_APP_KEYS)))})",
                       key)
        if not isinstance(value, str):
            raise fail(f"must be a string, got {type(value).__name__}", key)

    def secret(name: str, required: bool) -> str | None:
        if name in raw and f"{name}_env" in raw:
            raise fail(f"give {name} or {name}_env, not both", name)
        if f"{name}_env" in raw:
            var = raw[f"{name}_env"]
            if not env.get(var):
                raise fail(f"environment variable {var} is not set", f"{name}_env")
            return env[var]
        if name in raw and raw[name]:
            return raw[name]
        if required:
            raise fail(f"{name} (or {name}_env) is required", name if name in raw else None)
        return None

    appid = raw.get("appid", "")
    if not _APPID.match(appid):
        raise fail("appid is required: letters, digits, '_' or '-' (e.g. wx0123456789abcdef)",
                   "appid" if "appid" in raw else None)
    # The console shows the data format as "JSON" / "XML": any case is the same choice.
    fmt = raw.get("format", "xml").lower()
    if fmt not in FORMATS:
        raise fail(f'must be "xml" or "json", got {raw["format"]!r}', "format")
    mode = raw.get("mode", "safe").lower()
    if mode not in MODES:
        raise fail(f'must be "plaintext", "compatible" or "safe", got {raw["mode"]!r}', "mode")
    token = secret("token", True)
    aes = secret("encoding_aes_key", mode != "plaintext")
    previous = secret("previous_encoding_aes_key", False)
    for name, value in (("encoding_aes_key", aes), ("previous_encoding_aes_key", previous)):
        if value is not None and not _AES_KEY.match(value):
            key = f"{name}_env" if f"{name}_env" in raw else name
            raise fail("must be exactly 43 letters and digits (the console's EncodingAESKey)", key)
    return AppConfig(appid=appid, token=token or "", secret=secret("secret", False) or "",
                     encoding_aes_key=aes, previous_encoding_aes_key=previous, format=fmt,
                     mode=mode, **app_cloud(doc, index, raw))
