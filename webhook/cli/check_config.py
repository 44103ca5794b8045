"""``wxpush check-config``: everything ``wxpush serve`` checks before it starts (the config,
the environment, the store, the rules and routers: ``preflight``), then what would be served,
no secrets. ``ok`` is its last line, printed only when all of it passed."""

from __future__ import annotations

import argparse

from webhook.cli.preflight import is_placeholder, placeholders, preflight
from webhook.store.base import mask_url

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("check-config", help="check what wxpush serve checks before it "
                                                 "starts, and print what it would serve")
    parser.add_argument("--config", help="config file (default: $WXPUSH_CONFIG or ./wxpush.toml)")
    parser.add_argument("--allow-volatile-redis", action="store_true",
                        help="as wxpush serve --allow-volatile-redis")
    parser.set_defaults(handler=check_config)


def check_config(args: argparse.Namespace) -> int:
    checked = preflight(args.config, allow_volatile=args.allow_volatile_redis)
    settings = checked.settings
    server = settings.server
    store = mask_url(server.store)
    if not checked.store_existed:
        store += " (SQLite: created by this check)"
    print(f"store    {store}")
    print(f"api      {server.api_base} (token endpoint: {server.token_endpoint})")
    if server.routers:
        print(f"routers  {', '.join(server.routers)}")
    rules = checked.router.rules
    if server.rules:
        print(f"rules    {server.rules} ({len(rules)} rules with the routers and built-ins)")
    else:
        print(f"rules    {len(rules)} from routers, no rules file" if rules
              else "rules    none (pushes are acknowledged only)")
    window = f"{server.timestamp_tolerance}s" if server.timestamp_tolerance else "off"
    print(f"limits   body {server.max_body} bytes, timestamp window {window}")
    print(f"rates    /apps/{{appid}}/...: {server.burst_per_client} at once, then "
          f"{server.rate_per_client:g}/s per client; {server.burst_per_app} at once, then "
          f"{server.rate_per_app:g}/s per app; proxies trusted: "
          f"{', '.join(server.trusted_proxies) or 'none'}")
    for app in settings.apps.values():
        keys = "key" + (" + previous key" if app.previous_encoding_aes_key else "") \
            if app.encoding_aes_key else "no key"
        secret = ("no secret" if not app.secret else "placeholder secret"
                  if is_placeholder("secret", app.secret) else "secret set")
        print(f"app      /wechat/{app.appid}  {app.mode} {app.format}  {keys}, {secret}")
        if app.cloud_env:
            print(f"cloud    {app.appid}: env {app.cloud_env}, /files/ serves "
                  f"{', '.join(app.files) or 'nothing'}")
        for bridge in app.bridge:
            print(f"bridge   /apps/{app.appid}/functions/: {', '.join(bridge.functions)} "
                  f"of {bridge.app}")
    for client in settings.clients:
        print(f"client   {client.name} may read the access_token of {', '.join(client.apps)}")
    warnings = placeholders(settings)
    for warning in warnings:
        print(f"warning  {warning}")
    note = f" ({len(warnings)} warning{'s' if len(warnings) > 1 else ''})" if warnings else ""
    print(f"config   {settings.path}: ok{note}")
    return 0
