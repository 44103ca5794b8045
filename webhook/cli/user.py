"""``wxpush user OPENID`` prints the hash log lines and listings show for that customer
(``user=...``); ``wxpush user HASH`` finds the openid behind a hash in the store: among the
recipients of the newest replies and the senders of the pushes waiting or set aside."""

from __future__ import annotations

import argparse
import re
import sys

from webhook.cli.inbox import sender
from webhook.config.settings import config_path, load
from webhook.logsafe import shown
from webhook.push.messages import hashed
from webhook.store import open_store

__all__ = ["register"]

_HASH = re.compile(r"^[0-9a-f]{12}$")     # what ``hashed`` gives: an openid never looks so


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("user", help="a customer's openid to its hash in logs, or back")
    parser.add_argument("who", metavar="OPENID|HASH",
                        help="an openid (prints its hash) or a hash from a log line (prints "
                             "the openid, found in the store)")
    parser.add_argument("--config", help="config file naming the store, for a HASH "
                                         "(default: $WXPUSH_CONFIG or ./wxpush.toml)")
    parser.add_argument("--limit", type=int, default=10000,
                        help="replies searched, newest first (default 10000)")
    parser.set_defaults(handler=user)


def user(args: argparse.Namespace) -> int:
    if not _HASH.match(args.who):
        print(hashed(args.who))
        return 0
    store = open_store(load(config_path(args.config)).server.store)
    try:
        openids = {row.openid for row in store.outbox_list(limit=args.limit)}
        openids.update(sender(entry) or "" for entry in store.inbox_list(limit=args.limit))
    finally:
        store.close()
    found = sorted(openid for openid in openids if openid and hashed(openid) == args.who)
    for openid in found:
        print(shown(openid, 200))
    if not found:
        print(f"wxpush user: no customer with hash {args.who} among the newest {args.limit} "
              "replies and the pushes waiting or dead", file=sys.stderr)
        return 1
    return 0
