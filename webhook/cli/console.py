"""``wxpush console hash-password``: the password_hash of a ``[[console.operators]]`` entry,
from a password read on stdin (typed without echo at a terminal)."""

from __future__ import annotations

import argparse
import getpass
import sys

from webhook.errors import WxpushError
from webhook.passwords import hash_password

__all__ = ["register"]

MIN_LENGTH = 8


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("console", help="the operators' console")
    actions = parser.add_subparsers(dest="console_command", required=True, metavar="ACTION")
    hashing = actions.add_parser(
        "hash-password", help="print the password_hash of an operator (password on stdin)",
        description="e.g. printf '%%s' \"$PASSWORD\" | wxpush console hash-password")
    hashing.set_defaults(handler=hash_command)


def hash_command(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_LENGTH:
        raise WxpushError(f"the password must have at least {MIN_LENGTH} characters")
    print(hash_password(password))
    return 0
