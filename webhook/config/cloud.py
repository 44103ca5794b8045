"""The cloud keys of ``wxpush.toml``: an app's ``cloud_env``, ``files`` and ``[[apps.bridge]]``,
and the token service's ``[[clients]]``, read and checked with the line of every problem."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.config.tomlfile import TomlFile, known_keys
from webhook.errors import ConfigError

__all__ = ["Bridge", "ClientConfig", "CLOUD_APP_KEYS", "app_cloud", "check_bridges",
           "clients", "FILE_PREFIX", "FUNCTION_NAME"]

CLOUD_APP_KEYS = ("cloud_env", "files", "bridge")
_ENV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
# Cloud function names: a letter first, then letters, digits, _ or -, 60 at most
FUNCTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,59}$")
FILE_PREFIX = "cloud://"
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_BRIDGE_KEYS = ("app", "functions")
_CLIENT_KEYS = ("name", "key_sha256", "apps")


@dataclass(frozen=True, slots=True)
class Bridge:
    """The cloud functions of ``app`` that the users of the app holding this may call."""

    app: str
    functions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """A back end allowed to read the shared access_token of ``apps`` (the token service),
    known by the sha256 of its API key."""

    name: str
    key_sha256: str
    apps: tuple[str, ...]


def app_cloud(doc: TomlFile, index: int, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The cloud fields of the ``index``-th ``[[apps]]``."""
    def fail(problem: str, key: str) -> ConfigError:
        return doc.error(problem, table="apps", index=index, key=key)

    fields: dict[str, Any] = {}
    env = raw.get("cloud_env")
    if env is not None:
        if not isinstance(env, str) or not _ENV.fullmatch(env):
            raise fail("must be the cloud environment's ID (letters, digits, '-' and '_', "
                       'e.g. "prod-4gxyz1234"), as the cloud console shows it', "cloud_env")
        fields["cloud_env"] = env
    if "files" in raw:
        fields["files"] = _prefixes(raw["files"], fail)
        if env is None:
            raise fail("files are served from the app's cloud environment: set cloud_env too",
                       "files")
    if "bridge" in raw:
        fields["bridge"] = _bridges(doc, index, raw["bridge"])
    return fields


def _prefixes(value: Any, fail: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise fail('must be a list of file ID prefixes, e.g. ["cloud://prod-4gxyz.7072-prod-'
                   '4gxyz/public/"]', "files")
    for prefix in value:
        if not prefix.startswith(FILE_PREFIX) or len(prefix) <= len(FILE_PREFIX) + 1 \
                or not prefix.endswith("/") or not prefix.isprintable() or " " in prefix:
            raise fail(f"{prefix!r} is not a folder of cloud files: it starts with "
                       f"{FILE_PREFIX}, names the storage and ends with /", "files")
    return tuple(value)


def _bridges(doc: TomlFile, index: int, value: Any) -> tuple[Bridge, ...]:
    if not isinstance(value, list) or not value:
        raise doc.error("bridges are [[apps.bridge]] tables with app and functions",
                        table="apps", index=index, key="bridge")
    found = []
    for number, table in enumerate(value):
        def fail(problem: str, key: str | None = None) -> ConfigError:
            return _bridge_error(doc, index, number, problem, key)

        known_keys(table, _BRIDGE_KEYS, fail, not_table="must be a table with app and functions")
        app = table.get("app")
        if not isinstance(app, str) or not app:
            raise fail("app is required: the appid whose cloud functions are called",
                       "app" if "app" in table else None)
        functions = table.get("functions")
        if not isinstance(functions, list) or not functions or not all(
                isinstance(name, str) and FUNCTION_NAME.fullmatch(name) for name in functions):
            raise fail("must be a non-empty list of cloud function names (a letter, then "
                       "letters, digits, _ or -)", "functions")
        found.append(Bridge(app, tuple(functions)))
    return tuple(found)


def _bridge_error(doc: TomlFile, app_index: int, number: int, problem: str,
                  key: str | None) -> ConfigError:
    """At the line of the app's ``number``-th ``[[apps.bridge]]`` table (counted over the
    whole file, as the headers are), or of ``bridge =`` when written inline."""
    bridge_index = number + sum(len(app["bridge"]) for app in doc.data["apps"][:app_index]
                                if isinstance(app.get("bridge"), list))
    if doc.line_of("apps.bridge", bridge_index) is not None:
        return doc.error(problem, table="apps.bridge", index=bridge_index, key=key)
    return doc.error(problem, table="apps", index=app_index, key="bridge")


def check_bridges(doc: TomlFile, apps: Mapping[str, Any]) -> None:
    """Every bridge names a configured app with a cloud_env, and no function name twice for
    one calling app (``POST /apps/{appid}/functions/{name}`` must find one target)."""
    for index, app in enumerate(apps.values()):
        seen: dict[str, str] = {}
        for number, bridge in enumerate(app.bridge):
            def fail(problem: str, key: str) -> ConfigError:
                return _bridge_error(doc, index, number, problem, key)

            target = apps.get(bridge.app)
            if target is None:
                raise fail(f"app {bridge.app!r} is not configured in [[apps]]", "app")
            if target.cloud_env is None:
                raise fail(f"app {bridge.app!r} has no cloud_env to call its functions in",
                           "app")
            for name in bridge.functions:
                if name in seen:
                    raise fail(f"function {name!r} is already bridged to {seen[name]!r}: a "
                               "function name leads to one app", "functions")
                seen[name] = bridge.app


def clients(doc: TomlFile, apps: Mapping[str, Any]) -> tuple[ClientConfig, ...]:
    """The ``[[clients]]`` tables, each naming configured apps only."""
    raw = doc.data.get("clients", [])
    if not isinstance(raw, list):
        raise doc.error("clients are [[clients]] tables", key="clients")
    found: list[ClientConfig] = []
    for index, table in enumerate(raw):
        def fail(problem: str, key: str | None = None) -> ConfigError:
            return doc.error(problem, table="clients", index=index, key=key)

        known_keys(table, _CLIENT_KEYS, fail,
                   not_table="must be a table with name, key_sha256 and apps")
        name = table.get("name")
        if not isinstance(name, str) or not _CLIENT_NAME.fullmatch(name):
            raise fail("name is required: letters, digits, '.', '_' or '-' (e.g. \"erp\")",
                       "name" if "name" in table else None)
        if any(client.name == name for client in found):
            raise fail(f"client {name!r} is configured twice", "name")
        digest = table.get("key_sha256")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise fail("must be the hex sha256 of the client's API key (64 characters; "
                       "`wxpush clients add` makes both)",
                       "key_sha256" if "key_sha256" in table else None)
        if any(client.key_sha256 == digest.lower() for client in found):
            raise fail("another client has this key", "key_sha256")
        granted = table.get("apps")
        if not isinstance(granted, list) or not granted or \
                not all(isinstance(appid, str) for appid in granted):
            raise fail("must be a non-empty list of the appids whose token it may read", "apps")
        for appid in granted:
            if appid not in apps:
                raise fail(f"app {appid!r} is not configured in [[apps]]", "apps")
        found.append(ClientConfig(name, digest.lower(), tuple(granted)))
    return tuple(found)
