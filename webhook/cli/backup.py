"""``wxpush backup DEST``: a consistent copy of the SQLite store while the server runs
(``webhook.store.backup``); a Redis store is backed up with Redis's own persistence."""

from __future__ import annotations

import argparse

from webhook.config.settings import config_path, load
from webhook.errors import WxpushError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("backup", help="copy the SQLite store (database and journals) into "
                                           "a new directory, while the server runs")
    parser.add_argument("dest", metavar="DEST", help="a directory that does not exist yet "
                                                     "(or is empty)")
    parser.add_argument("--config", help="config file (default: $WXPUSH_CONFIG or ./wxpush.toml)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from webhook.store.backup import backup

    store = load(config_path(args.config)).server.store
    if not store.startswith("sqlite:///") or store.endswith(":memory:"):
        raise WxpushError("the store is not a SQLite file: back a Redis store up with Redis's "
                          "own persistence (appendonly files, or BGSAVE and its dump.rdb)")
    database, journals = backup(store[len("sqlite:///"):], args.dest)
    print(f"backup   {database} ({journals} journal file{'' if journals == 1 else 's'} "
          f"beside it): stop the server and copy them back beside the store to restore")
    return 0
