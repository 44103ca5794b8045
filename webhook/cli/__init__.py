"""The ``wxpush`` command: one sub-command module per concern, registered here in one list."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Each module exposes ``register(subparsers)``; a sub-command's handler returns an exit code.
COMMANDS = ("serve", "deliver", "check_config", "rules", "token", "push", "emulator", "inbox",
            "outbox", "user", "backup", "console", "demo", "clients", "cloud")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wxpush", description="WeChat customer-service webhook")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"webhook.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors we expect are one readable line on stderr and a non-zero exit."""
    from webhook.errors import WxpushError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except WxpushError as exc:
        print(f"wxpush {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

