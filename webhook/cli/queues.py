"""What ``wxpush outbox`` and ``wxpush inbox`` share: the same four actions over one of the
store's queues (stats, list, retry what is dead, purge what is old), on the store the config
names, with the same arguments and the same output."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from webhook.config.settings import Settings, config_path, load
from webhook.errors import WxpushError
from webhook.store import Store, open_store

__all__ = ["Queue", "register_queue", "parse_age", "when"]

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_CONFIG_HELP = "config file (default: $WXPUSH_CONFIG or ./wxpush.toml)"


@dataclass(frozen=True, slots=True)
class Queue:
    """One queue as its command shows it: ``thing`` / ``things`` is what items are called,
    ``key`` the name of what tells them apart; the callables read and repair it in the store."""

    command: str
    help: str
    thing: str
    things: str
    key: str
    states: tuple[str, ...]
    stats: Callable[[Store], dict[str, int]]
    lines: Callable[[Store, str | None, int, bool], list[str]]   # (..., state, limit, reveal)
    user: str            # who ``user=`` is in a listing
    requeue: Callable[[Store, Settings, Sequence[str] | None], int]
    purge: Callable[[Store, float], int]
    purged: str          # what purge deletes, for its help


def parse_age(text: str) -> float:
    """``2w``, ``7d``, ``12h``, ``30m`` or ``45s`` in seconds."""
    found = _AGE.match(text.strip())
    if not found:
        raise WxpushError(f"--older-than: {text!r} is not an age like 2w, 7d, 12h, 30m or 45s")
    return int(found.group(1)) * _UNIT[found.group(2)]


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def register_queue(sub: argparse._SubParsersAction, queue: Queue) -> None:
    parser = sub.add_parser(queue.command, help=queue.help)
    parser.add_argument("--config", help=_CONFIG_HELP)
    parser.set_defaults(queue=queue)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    _action(actions, "stats", help=f"{queue.things} per state").set_defaults(handler=_stats)
    listing = _action(actions, "list", help=f"{queue.things}, newest first")
    listing.add_argument("--state", choices=queue.states)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--reveal", action="store_true",
                         help=f"the {queue.user}'s openid instead of its hash (as logs show it)")
    listing.set_defaults(handler=_list)
    retry = _action(actions, "retry", help=f"try dead {queue.things} again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("item", nargs="?", metavar=queue.key.upper(),
                       help=f"the {queue.thing}'s {queue.key}")
    which.add_argument("--all-dead", action="store_true", help=f"every dead {queue.thing}")
    retry.set_defaults(handler=_requeue)
    purge = _action(actions, "purge", help=f"delete {queue.purged} older than an age")
    purge.add_argument("--older-than", required=True, help="e.g. 2w, 7d, 12h")
    purge.set_defaults(handler=_purge)


def _action(actions: argparse._SubParsersAction, name: str, *, help: str
            ) -> argparse.ArgumentParser:
    """An action that takes ``--config`` after its name too, as every other command does;
    not given there, the one given before the action stands (SUPPRESS)."""
    parser = actions.add_parser(name, help=help)
    parser.add_argument("--config", default=argparse.SUPPRESS, help=_CONFIG_HELP)
    return parser


def _open(args: argparse.Namespace) -> tuple[Store, Settings]:
    settings = load(config_path(args.config))
    return open_store(settings.server.store), settings


def _stats(args: argparse.Namespace) -> int:
    store, _ = _open(args)
    for state, count in args.queue.stats(store).items():
        print(f"{state:8} {count}")
    return 0


def _list(args: argparse.Namespace) -> int:
    store, _ = _open(args)
    lines = args.queue.lines(store, args.state, args.limit, args.reveal)
    for line in lines:
        print(line)
    if not lines:
        print(f"no {args.queue.things}")
    return 0


def _requeue(args: argparse.Namespace) -> int:
    queue: Queue = args.queue
    store, settings = _open(args)
    count = queue.requeue(store, settings, None if args.all_dead else [args.item])
    if not count and not args.all_dead:
        print(f"wxpush {queue.command}: no dead {queue.thing} with {queue.key} {args.item}",
              file=sys.stderr)
        return 1
    print(f"requeued {count} {queue.thing if count == 1 else queue.things}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    age = parse_age(args.older_than)
    store, _ = _open(args)
    queue: Queue = args.queue
    count = queue.purge(store, time.time() - age)
    print(f"purged {count} {queue.thing if count == 1 else queue.things}")
    return 0
