"""``wxpush outbox``: look at and repair the reply queue (stats, list, retry, purge)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timezone

from webhook.errors import ConfigError
from webhook.settings import config_path, load
from webhook.store import OUTBOX_STATES, Store, open_store

__all__ = ["register", "parse_age"]

_AGE = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``7d``, ``12h``, ``30m`` or ``45s`` in seconds."""
    found = _AGE.match(text.strip())
    if not found:
        raise ConfigError(f"{text!r} is not an age like 7d, 12h, 30m or 45s", key="--older-than")
    return int(found.group(1)) * _UNIT[found.group(2)]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("outbox", help="inspect and repair the reply queue")
    parser.add_argument("--config", help="config file (default: $WXPUSH_CONFIG or ./wxpush.toml)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("stats", help="rows per state (and pushes waiting in the journal)"
                       ).set_defaults(handler=stats)
    listing = actions.add_parser("list", help="rows, newest first")
    listing.add_argument("--state", choices=OUTBOX_STATES)
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=list_rows)
    retry = actions.add_parser("retry", help="send dead rows again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="row id")
    which.add_argument("--all-dead", action="store_true", help="every dead row")
    retry.set_defaults(handler=requeue)
    purge = actions.add_parser("purge", help="delete sent and dead rows older than an age")
    purge.add_argument("--older-than", required=True, help="e.g. 7d, 12h")
    purge.set_defaults(handler=purge_rows)


def _store(args: argparse.Namespace) -> Store:
    return open_store(load(config_path(args.config)).server.store)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def stats(args: argparse.Namespace) -> int:
    store = _store(args)
    for state, count in store.outbox_stats().items():
        print(f"{state:8} {count}")
    if store.journaled:   # pushes not yet handled: a growing count means no delivery process
        print(f"{'journal':8} {store.inbox_waiting()}")
    return 0


def list_rows(args: argparse.Namespace) -> int:
    rows = _store(args).outbox_list(state=args.state, limit=args.limit)
    for row in rows:
        error = f" errcode={row.errcode}" if row.errcode is not None else ""
        reason = f" {row.errmsg}" if row.errmsg else ""
        print(f"{row.id:>8} {row.state:8} {_when(row.updated_at)} appid={row.appid} "
              f"rule={row.rule or '-'} attempts={row.attempts}{error}{reason}")
    if not rows:
        print("no rows")
    return 0


def requeue(args: argparse.Namespace) -> int:
    count = _store(args).outbox_requeue(None if args.all_dead else [args.id])
    if not count and not args.all_dead:
        print(f"wxpush outbox: no dead row with id {args.id}", file=sys.stderr)
        return 1
    print(f"requeued {count} row(s)")
    return 0


def purge_rows(args: argparse.Namespace) -> int:
    count = _store(args).outbox_purge(before=time.time() - parse_age(args.older_than))
    print(f"purged {count} row(s)")
    return 0
