"""``wxpush deliver``: the work done after the answer, without serving HTTP: take recorded
pushes, run their handlers, send the replies, take over pushes and replies whose process died.

``wxpush serve`` runs ``[server] deliveries`` of them beside gunicorn (the delivery
processes), so the request workers run the request path alone. With Redis, a ``wxpush
deliver`` on any host adds handlers and senders. SIGTERM or SIGINT: stop taking, let running
handlers and in-flight sends finish (within ``WXPUSH_GRACEFUL_TIMEOUT`` seconds, as for
gunicorn's workers).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from dataclasses import replace

from webhook.cli.logs import configure_logging
from webhook.config.settings import config_path, load
from webhook.errors import ConfigError

__all__ = ["register", "shares"]

log = logging.getLogger("webhook.delivery.background")
NICE = 10   # how much nicer than the request workers the delivery process runs


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("deliver", help="handle recorded pushes and send replies, "
                                           "without serving HTTP")
    parser.add_argument("--config", help="config file (default: $WXPUSH_CONFIG or ./wxpush.toml)")
    parser.add_argument("--allow-volatile-redis", action="store_true",
                        help="run on a Redis that keeps nothing across a restart (tests only)")
    # wxpush serve's supervisor: the pipe to tell it of progress on (webhook.server.supervisor),
    # and which of its delivery processes this is ("I/N": a share of [server] senders).
    parser.add_argument("--heartbeat-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--share", type=_share, help=argparse.SUPPRESS)
    parser.set_defaults(handler=work)


def _share(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with I < N")
    return int(index), int(count)


def shares(senders: int, processes: int) -> list[int]:
    """``senders`` sends in flight split between ``processes`` delivery processes."""
    return [senders // processes + (i < senders % processes) for i in range(processes)]


def graceful_timeout() -> float:
    text = os.environ.get("WXPUSH_GRACEFUL_TIMEOUT", "20")
    try:
        return max(1.0, float(text))
    except ValueError:
        raise ConfigError(f"must be a number of seconds, not {text!r}", file="environment",
                          key="WXPUSH_GRACEFUL_TIMEOUT") from None


def work(args: argparse.Namespace) -> int:
    from webhook.delivery.heartbeat import Heartbeat
    from webhook.delivery.history import History
    from webhook.server.app import create_background, parts

    settings = load(config_path(args.config))
    if args.share is not None:
        index, count = args.share
        senders = shares(settings.server.senders, count)[index]
        settings = replace(settings, server=replace(settings.server, senders=senders))
    configure_logging()
    # WeChat's 5 s answer comes first, a reply can wait a few ms: on a host short of CPU the
    # request workers get it first. (Linux: the threads started from here on inherit it.)
    os.nice(NICE)
    timeout = graceful_timeout()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    store, api, router = parts(settings, allow_volatile=args.allow_volatile_redis)
    heartbeat = None if args.heartbeat_fd is None else Heartbeat(args.heartbeat_fd)
    history = History(store, days=settings.server.history_days)
    background = create_background(settings, store=store, api=api, router=router,
                                   heartbeat=heartbeat, history=history)
    router.start()
    background.start()
    history.start()
    log.info("delivery started pid=%d senders=%d", os.getpid(), settings.server.senders)
    while not stopping.wait(1.0):
        pass
    log.info("delivery stopping pid=%d", os.getpid())
    background.stop(timeout=max(1.0, timeout - 2))
    history.stop()
    router.stop()
    store.close()
    return 0
