"""``wxpush check-config``: validate the config and show what would be served, no secrets."""

from __future__ import annotations

import argparse
import re

from webhook.config.settings import config_path, load

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("check-config", help="validate the config and print what it serves")
    parser.add_argument("--config", help="config file (default: $WXPUSH_CONFIG or ./wxpush.toml)")
    parser.set_defaults(handler=check_config)


def mask_url(url: str) -> str:
    """A store URL with any password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def check_config(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    settings = load(path)
    server = settings.server
    print(f"config   {path}: ok")
    print(f"store    {mask_url(server.store)}")
    print(f"api      {server.api_base} (token endpoint: {server.token_endpoint})")
    from handlers import build_router
    build_router(server.rules, server.routers)
    if server.routers:
        print(f"routers  {', '.join(server.routers)}: ok")
    if server.rules:
        print(f"rules    {server.rules}: ok")
    else:
        print("rules    none (pushes are acknowledged only)")
    window = f"{server.timestamp_tolerance}s" if server.timestamp_tolerance else "off"
    print(f"limits   body {server.max_body} bytes, timestamp window {window}")
    print(f"rates    /apps/{{appid}}/...: {server.burst_per_client} at once, then "
          f"{server.rate_per_client:g}/s per client; {server.burst_per_app} at once, then "
          f"{server.rate_per_app:g}/s per app; proxies trusted: "
          f"{', '.join(server.trusted_proxies) or 'none'}")
    for app in settings.apps.values():
        keys = "key" + (" + previous key" if app.previous_encoding_aes_key else "") \
            if app.encoding_aes_key else "no key"
        secret = "secret set" if app.secret else "no secret (sending disabled)"
        print(f"app      /wechat/{app.appid}  {app.mode} {app.format}  {keys}, {secret}")
        if app.cloud_env:
            print(f"cloud    {app.appid}: env {app.cloud_env}, /files/ serves "
                  f"{', '.join(app.files) or 'nothing'}")
        for bridge in app.bridge:
            print(f"bridge   /apps/{app.appid}/functions/: {', '.join(bridge.functions)} "
                  f"of {bridge.app}")
    for client in settings.clients:
        print(f"client   {client.name} may read the access_token of {', '.join(client.apps)}")
    return 0
