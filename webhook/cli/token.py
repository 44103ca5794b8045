"""``wxpush token show APPID [--reveal]`` and ``wxpush token refresh APPID [--force]``."""

from __future__ import annotations

import argparse
import time

from webhook.config import settings as settings_module
from webhook.errors import UnknownApp
from webhook.store import open_store
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

__all__ = ["register", "provider"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("token", help="show or refresh the shared access_token")
    sub = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="when the cached token was fetched and when it expires")
    show.add_argument("--reveal", action="store_true", help="also print the token itself")
    show.set_defaults(handler=show_token)
    refresh = sub.add_parser("refresh", help="fetch a token now (with the refresh lock)")
    refresh.add_argument("--force", action="store_true",
                         help="stable_token force_refresh: a new token (<= 20/day, 30 s apart)")
    refresh.set_defaults(handler=refresh_token)
    for action in (show, refresh):
        action.add_argument("appid")
        action.add_argument("--config", help="config file (default: $WXPUSH_CONFIG or wxpush.toml)")


def provider(args: argparse.Namespace) -> TokenProvider:
    """The shared tokens of the config's apps, which must include ``args.appid``."""
    settings = settings_module.load(settings_module.config_path(args.config))
    if args.appid not in settings.apps:
        raise UnknownApp(f"appid {args.appid} is not configured in {settings.path}")
    server = settings.server
    return TokenProvider(open_store(server.store), WeChatClient(server.api_base), settings.apps,
                         endpoint=server.token_endpoint, refresh_ahead=server.token_refresh_ahead)


def show_token(args: argparse.Namespace) -> int:
    tokens = provider(args)
    info = tokens.info(args.appid)
    if info is None:
        print(f"{args.appid}: no cached token (wxpush token refresh {args.appid} fetches one)")
        return 1
    now = time.time()
    print(f"appid       {info.appid}\n"
          f"endpoint    {tokens.endpoint}\n"
          f"fingerprint {info.fingerprint}\n"
          f"fetched     {_when(info.fetched_at, now)}\n"
          f"refresh     {_when(info.refresh_at, now)}\n"
          f"expires     {_when(info.expires_at, now)}")
    if args.reveal:
        print(f"token       {tokens.peek(args.appid)}")
    return 0


def refresh_token(args: argparse.Namespace) -> int:
    tokens = provider(args)
    tokens.refresh(args.appid, force=args.force)
    info = tokens.info(args.appid)
    if info is not None:
        print(f"{args.appid}: fingerprint {info.fingerprint}, "
              f"expires {_when(info.expires_at, time.time())}")
    return 0


def _when(moment: float, now: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))
    delta = round(moment - now)
    return f"{stamp} (in {delta} s)" if delta > 0 else f"{stamp} ({-delta} s ago)"
