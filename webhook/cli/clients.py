"""``wxpush clients add NAME --apps APPID[,APPID...]``: an API key for the token service.

The key is made here and printed once; the config keeps only its sha256 (a ``[[clients]]``
table added at the end of the file, which is loaded again to check it, and left as it was
if it does not load). A running server reads it when it starts again.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
from pathlib import Path

from webhook.config.settings import config_path, load
from webhook.errors import ConfigError, WxpushError
from webhook.server.tokenservice import key_digest

__all__ = ["register"]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("clients", help="API keys of the token service for your back ends")
    actions = parser.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="make a key for a back end, print it once and add "
                                         "its [[clients]] table to the config",
                             description="e.g. wxpush clients add erp --apps wx0123456789abcdef")
    add.add_argument("name", help="the back end's name: letters, digits, '.', '_' or '-'")
    add.add_argument("--apps", required=True, action="append", metavar="APPID[,APPID...]",
                     help="the apps whose access_token it may read")
    add.add_argument("--config", help="config file (default: $WXPUSH_CONFIG or ./wxpush.toml)")
    add.set_defaults(handler=add_client)


def add_client(args: argparse.Namespace) -> int:
    path = Path(config_path(args.config))
    settings = load(path)
    apps = [appid for item in args.apps for appid in item.split(",") if appid]
    if not _NAME.fullmatch(args.name):
        raise WxpushError(f"client name {args.name!r}: letters, digits, '.', '_' or '-'")
    if any(client.name == args.name for client in settings.clients):
        raise WxpushError(f"client {args.name!r} is already in {path}")
    missing = [appid for appid in apps if appid not in settings.apps]
    if not apps or missing:
        raise WxpushError(f"--apps: {', '.join(missing) or 'none given'}: not an app of {path}")
    key = secrets.token_urlsafe(32)
    before = path.read_bytes()
    table = (f'\n[[clients]]\nname = "{args.name}"\nkey_sha256 = "{key_digest(key)}"\n'
             f"apps = {json.dumps(apps)}\n")
    with open(path, "a", encoding="utf-8") as config:
        config.write(("\n" if before and not before.endswith(b"\n") else "") + table)
    try:
        load(path)
    except ConfigError:
        path.write_bytes(before)
        raise
    print(f"client {args.name} added to {path}: it may read the access_token of "
          f"{', '.join(apps)}\n"
          f"key (shown once: keep it secret, send it as Authorization: Bearer <key>):\n{key}\n"
          f"wxpush serve uses it from its next start.")
    return 0
