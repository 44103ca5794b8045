"""``wxpush cloud call|query|upload|link``: an app's cloud functions, database and storage,
from the command line, with the shared access_token (docs/protocol.md §9).

    wxpush cloud call APPID orderStatus --data '{"order": "123456"}'
    wxpush cloud query APPID --collection faq --where '{"key": "shipping"}' --limit 1
    wxpush cloud upload APPID menu.png public/menu.png
    wxpush cloud link APPID cloud://prod-4gxyz.7072-prod-4gxyz/public/menu.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from webhook.cloudquery import collection
from webhook.errors import WxpushError

__all__ = ["register"]

_CONFIG = "config file (default: $WXPUSH_CONFIG or ./wxpush.toml)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("cloud", help="call an app's cloud functions, query its database, "
                                          "upload files, make download links")
    actions = parser.add_subparsers(dest="cloud_command", required=True, metavar="ACTION")
    call = actions.add_parser("call", help="run a cloud function; prints its result")
    call.add_argument("appid")
    call.add_argument("name", help="the function's name")
    call.add_argument("--data", default="{}", help="its event, a JSON object (default {})")
    call.set_defaults(handler=call_function)
    query = actions.add_parser("query", help="the records of a collection (or their count)")
    query.add_argument("appid")
    query.add_argument("--collection", required=True)
    query.add_argument("--where", default="{}", help='a JSON object, e.g. {"key": "shipping"}')
    query.add_argument("--order-by", metavar="FIELD[:desc]")
    query.add_argument("--skip", type=int)
    query.add_argument("--limit", type=int, help="at most this many (WeChat's default: 10)")
    query.add_argument("--count", action="store_true", help="print how many match instead")
    query.set_defaults(handler=run_query)
    upload = actions.add_parser("upload", help="store a local file; prints its file ID")
    upload.add_argument("appid")
    upload.add_argument("file", help="the local file")
    upload.add_argument("path", help="where it goes in cloud storage, e.g. public/menu.png")
    upload.set_defaults(handler=upload_file)
    link = actions.add_parser("link", help="a temporary download link of a cloud file, and its "
                                           "permanent /files/ path when the app serves it")
    link.add_argument("appid")
    link.add_argument("fileid", help="cloud://...")
    link.add_argument("--max-age", type=int, default=7200, help="seconds (default 7200)")
    link.set_defaults(handler=make_link)
    for action in (call, query, upload, link):
        action.add_argument("--env", help="the cloud environment (default: the app's cloud_env)")
        action.add_argument("--config", help=_CONFIG)


def _cloud(args: argparse.Namespace) -> Any:
    from webhook.cli.token import provider
    from webhook.wechat.cloud import Cloud

    tokens = provider(args)
    return Cloud(tokens.client, tokens), tokens.apps[args.appid]


def _json(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise WxpushError(f"{flag} must be a JSON object, e.g. '{{\"key\": \"value\"}}'")
    return value


def _print(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def call_function(args: argparse.Namespace) -> int:
    data = _json(args.data, "--data")
    cloud, _ = _cloud(args)
    _print(cloud.call_function(args.appid, args.name, data, env=args.env))
    return 0


def run_query(args: argparse.Namespace) -> int:
    where = _json(args.where, "--where")
    try:
        query = collection(args.collection).where(where)
        if args.order_by:
            name, _, direction = args.order_by.partition(":")
            query = query.order_by(name, direction or "asc")
        if args.skip is not None:
            query = query.skip(args.skip)
        if args.limit is not None:
            query = query.limit(args.limit)
        statement = query.count() if args.count else query.get()
    except ValueError as exc:
        raise WxpushError(str(exc)) from None
    cloud, _ = _cloud(args)
    _print(cloud.database(args.appid, statement, env=args.env))
    return 0


def upload_file(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise WxpushError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    cloud, app = _cloud(args)
    fileid = cloud.upload(args.appid, args.path, data, env=args.env)
    print(fileid)
    _served(app, fileid)
    return 0


def make_link(args: argparse.Namespace) -> int:
    if not args.fileid.startswith("cloud://") or args.max_age < 1:
        raise WxpushError("give a cloud:// file ID and --max-age of 1 second or more")
    cloud, app = _cloud(args)
    (link,) = cloud.download_links(args.appid, [args.fileid], max_age=args.max_age,
                                   env=args.env)
    if link.status != 0:
        raise WxpushError(f"no link for {args.fileid}: {link.errmsg or link.status}")
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() + args.max_age))
    print(f"{link.url}\nvalid until about {until}")
    _served(app, args.fileid)
    return 0


def _served(app: Any, fileid: str) -> None:
    if any(fileid.startswith(prefix) for prefix in app.files):
        print(f"permanent link: https://<your host>/files/{app.appid}/"
              f"{fileid[len('cloud://'):]}")
