"""``wxpush serve``: validate the config, then run gunicorn with ``gunicorn.conf.py`` and,
with a SQLite store, the delivery process (``webhook.supervisor``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from webhook.cli.logs import configure_logging
from webhook.cli.worker import graceful_timeout
from webhook.errors import ConfigError
from webhook.settings import config_path, load
from webhook.store import open_store, require_durable
from webhook.supervisor import Supervisor

__all__ = ["register", "gunicorn_config"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="run the server (gunicorn with gunicorn.conf.py, and "
                                          "a delivery process with a SQLite store)")
    parser.add_argument("--config", help="config file (default: $WXPUSH_CONFIG or ./wxpush.toml)")
    parser.add_argument("--bind", help="HOST:PORT (default: $WXPUSH_BIND or 127.0.0.1:8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default: $WXPUSH_WORKERS or 2)")
    parser.add_argument("--allow-volatile-redis", action="store_true",
                        help="run on a Redis that keeps nothing across a restart (tests only)")
    parser.set_defaults(handler=serve)


def gunicorn_config() -> Path:
    """``./gunicorn.conf.py`` if present, else the one at the root of this checkout."""
    for candidate in (Path.cwd() / "gunicorn.conf.py",
                      Path(__file__).resolve().parents[2] / "gunicorn.conf.py"):
        if candidate.is_file():
            return candidate
    raise ConfigError("gunicorn.conf.py not found in the current directory", file="gunicorn.conf.py")


def serve(args: argparse.Namespace) -> int:
    path = os.path.abspath(config_path(args.config))
    settings = load(path)          # a bad config is one line here, not a worker boot loop
    configure_logging()
    store = open_store(settings.server.store)
    require_durable(store, settings.server.store, allow_volatile=args.allow_volatile_redis
                    or settings.server.allow_volatile_redis)
    journaled = store.journaled
    store.close()
    from handlers import build_router
    build_router(settings.server.rules, settings.server.routers)   # rules and router imports
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    timeout = graceful_timeout()
    conf = str(gunicorn_config())
    env = {**os.environ, "WXPUSH_CONFIG": path}
    if args.bind:
        env["WXPUSH_BIND"] = args.bind
    if args.workers is not None:
        env["WXPUSH_WORKERS"] = str(args.workers)
    if args.allow_volatile_redis:
        env["WXPUSH_ALLOW_VOLATILE_REDIS"] = "1"
    delivery = None
    if journaled:   # the request workers leave handling and sending to the delivery process
        env["WXPUSH_DELIVERY"] = "process"
        delivery = [sys.executable, "-m", "webhook.cli", "worker", "--config", path]
    sys.stdout.flush()
    return Supervisor([sys.executable, "-m", "gunicorn", "-c", conf], delivery,
                      graceful=timeout, env=env, stall=settings.server.stall_timeout).run()
