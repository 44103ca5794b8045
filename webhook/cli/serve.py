"""``wxpush serve``: validate the config and the address to listen on, then run gunicorn with
``gunicorn.conf.py`` and the delivery process (``webhook.server.supervisor``)."""

from __future__ import annotations

import argparse
import os
import runpy
import socket
import sys
from pathlib import Path

from gunicorn.util import is_ipv6, parse_address

from webhook.cli.deliver import graceful_timeout
from webhook.cli.logs import configure_logging
from webhook.config.settings import config_path, load
from webhook.errors import ConfigError, WxpushError
from webhook.server.supervisor import Supervisor
from webhook.store import open_store, require_durable

__all__ = ["register", "gunicorn_config", "check_free"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="run the server (gunicorn with gunicorn.conf.py, and "
                                          "the delivery process)")
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


def check_free(bind: str) -> None:
    """Listen on ``bind`` for a moment, as gunicorn will: a port already taken is one line
    here, before anything starts (gunicorn would retry for 5 s beside a delivery process
    already running, then fail with a traceback). A Unix socket or inherited descriptor is
    left to gunicorn."""
    if not bind or bind.startswith(("unix:", "fd://")):
        return
    try:
        host, port = parse_address(bind)
    except RuntimeError:
        raise WxpushError(f"cannot listen on {bind}: not HOST:PORT") from None
    with socket.socket(socket.AF_INET6 if is_ipv6(host) else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as gunicorn does
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise WxpushError(f"cannot listen on {bind}: {exc.strerror or exc}") from None


def serve(args: argparse.Namespace) -> int:
    path = os.path.abspath(config_path(args.config))
    settings = load(path)          # a bad config is one line here, not a worker boot loop
    configure_logging()
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    conf = str(gunicorn_config())
    env = {**os.environ, "WXPUSH_CONFIG": path}
    if args.bind:
        env["WXPUSH_BIND"] = args.bind
    check_free(env.get("WXPUSH_BIND") or _default_bind(conf))
    store = open_store(settings.server.store)
    require_durable(store, settings.server.store, allow_volatile=args.allow_volatile_redis
                    or settings.server.allow_volatile_redis)
    store.close()
    from handlers import build_router
    build_router(settings.server.rules, settings.server.routers)   # rules and router imports
    timeout = graceful_timeout()
    if args.workers is not None:
        env["WXPUSH_WORKERS"] = str(args.workers)
    delivery = [sys.executable, "-m", "webhook.cli", "deliver", "--config", path]
    if args.allow_volatile_redis:
        env["WXPUSH_ALLOW_VOLATILE_REDIS"] = "1"
        delivery.append("--allow-volatile-redis")
    sys.stdout.flush()
    return Supervisor([sys.executable, "-m", "gunicorn", "-c", conf], delivery,
                      graceful=timeout, env=env, stall=settings.server.stall_timeout).run()


def _default_bind(conf: str) -> str:
    """The address ``conf`` gives gunicorn; "" if it cannot be read here (gunicorn will say
    why when it reads it)."""
    try:
        return str(runpy.run_path(conf).get("bind") or "")
    except Exception:
        return ""
