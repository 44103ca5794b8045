"""``wxpush emulator``: the WeChat API emulator on a real (threaded wsgiref) server until
SIGTERM / SIGINT. The first stdout line is ``wxpush emulator listening on URL``; the next
ones list its control routes (``webhook.testing.emulator.control``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable

from webhook.testing.emulator import Emulator
from webhook.testing.emulator.cloud import DEMO_COLLECTIONS, DEMO_FUNCTIONS
from webhook.testing.emulator.control import routes
from webhook.testing.server import serve

__all__ = ["register"]


def _pair(second: str) -> Callable[[str], tuple[str, str]]:
    """The argument type of ``APPID:{second}``."""
    def parse(value: str) -> tuple[str, str]:
        appid, sep, other = value.partition(":")
        if not (appid and sep and other):
            raise argparse.ArgumentTypeError(f"expected APPID:{second}, got {value!r}")
        return appid, other
    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "emulator", help="run the WeChat API emulator (tokens, send, media, login, open data)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument("--app", type=_pair("SECRET"), action="append", default=[], metavar="APPID:SECRET",
                        help="register an app (repeatable); more via POST /_emulator/apps")
    parser.add_argument("--cloud", type=_pair("ENV"), action="append", default=[], metavar="APPID:ENV",
                        help="a cloud environment of a registered app, with the demo's "
                             "orderStatus function and faq collection (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of tokens, ids and faults")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    emulator = Emulator(seed=args.seed)
    for appid, secret in args.app:
        emulator.register_app(appid, secret)
    for appid, env in args.cloud:
        if appid not in emulator.apps:
            print(f"wxpush emulator: --cloud {appid}:{env}: register the app with --app first",
                  file=sys.stderr)
            return 2
        emulator.add_cloud_env(appid, env, functions=DEMO_FUNCTIONS, collections=DEMO_COLLECTIONS)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    server = serve(emulator.app, host=args.host, port=args.port)
    try:
        print(f"wxpush emulator listening on {server.url}\n"
              f"WeChat's API for api_base = \"{server.url}\"; driven through these routes:\n"
              + "\n".join(f"  {route}" for route in routes()), flush=True)
        stop.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
