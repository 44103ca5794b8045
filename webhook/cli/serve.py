"""``wxpush serve``: check the address to listen on and what ``preflight`` checks (config,
store, rules, routers), say where the server answers, then run gunicorn with its settings
(``webhook/server/gunicorn_conf.py``) and the delivery processes (``webhook.server.supervisor``)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

from gunicorn.util import is_ipv6, parse_address

from webhook.cli.deliver import graceful_timeout
from webhook.cli.logs import configure_logging
from webhook.cli.preflight import GUNICORN_CONF, gunicorn_settings, placeholders, preflight
from webhook.config.settings import Settings
from webhook.errors import ConfigError, WxpushError
from webhook.server.rundir import RunDir
from webhook.server.supervisor import Supervisor
from webhook.store import Store, open_store

__all__ = ["register", "check_free", "announce"]

log = logging.getLogger("webhook.server")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="run the server (gunicorn, and the delivery processes)")
    parser.add_argument("--config", help="config file (default: $WXPUSH_CONFIG or ./wxpush.toml)")
    parser.add_argument("--bind", help="HOST:PORT (default: $WXPUSH_BIND or 127.0.0.1:8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default: $WXPUSH_WORKERS or 2)")
    parser.add_argument("--allow-volatile-redis", action="store_true",
                        help="run on a Redis that keeps nothing across a restart (tests only)")
    parser.set_defaults(handler=serve)


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
    if args.workers is not None and args.workers < 1:
        raise ConfigError("must be at least 1", key="--workers")
    bind = args.bind or os.environ.get("WXPUSH_BIND") or gunicorn_settings().bind
    check_free(bind)
    configure_logging()
    # A bad config, store, rules file or router is one line here, not a worker boot loop.
    checked = preflight(args.config, allow_volatile=args.allow_volatile_redis)
    settings = checked.settings
    configure_logging(settings.server.log_format)
    for warning in placeholders(settings):
        log.warning("%s", warning)
    log_start(settings, len(checked.router.rules))
    path = settings.path
    env = {**os.environ, "WXPUSH_CONFIG": path, "WXPUSH_LOG_FORMAT": settings.server.log_format}
    if args.bind:
        env["WXPUSH_BIND"] = args.bind
    if args.workers is not None:
        env["WXPUSH_WORKERS"] = str(args.workers)
    delivery = [sys.executable, "-m", "webhook.cli", "deliver", "--config", path]
    if args.allow_volatile_redis:
        env["WXPUSH_ALLOW_VOLATILE_REDIS"] = "1"
        delivery.append("--allow-volatile-redis")
    count = settings.server.deliveries
    deliveries = [[*delivery, "--share", f"{i}/{count}"] for i in range(count)]
    if settings.server.log_format == "json":   # a log pipeline reads one object a line
        for line in announce(bind, settings).splitlines():
            log.info("%s", line.strip())
    else:
        print(announce(bind, settings), flush=True)
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", f"python:{GUNICORN_CONF}"]
    with RunDir(metrics=settings.server.metrics != "off", env=os.environ) as run:
        env.update(run.env)
        os.environ.update(run.env)   # this process reads the counts for a metrics port
        if settings.server.metrics_port is not None:
            serve_metrics(settings.server.metrics_port, bind, open_store(settings.server.store))
        sys.stdout.flush()
        return Supervisor(gunicorn, deliveries, graceful=graceful_timeout(), env=env,
                          stall=settings.server.stall_timeout, progress=run.beats.note,
                          gone=run.gone).run()


def log_start(settings: Settings, rules: int) -> None:
    """What this server serves, once, at start: each app, the rules and the routers."""
    server = settings.server
    for app in settings.apps.values():
        log.info("app appid=%s format=%s mode=%s path=/wechat/%s", app.appid, app.format,
                 app.mode, app.appid)
    log.info("rules file=%s rules=%d", server.rules or "-", rules)
    log.info("routers %s", ", ".join(server.routers) or "-")
    log.info("metrics %s", {"on": "at GET /metrics", "off": "off"}.get(
        server.metrics, f"on port {server.metrics_port}"))


def serve_metrics(port: int, bind: str, store: Store) -> None:
    """``metrics = "port:N"``: /metrics on a listener of its own, on the host of ``bind``,
    answered by this process from every process's counts and ``store``."""
    from prometheus_client import start_http_server

    from webhook.server.exposition import QueueCollector, registry

    host = "127.0.0.1"
    if bind and not bind.startswith(("unix:", "fd://")):
        host = parse_address(bind)[0] or "0.0.0.0"
    try:
        start_http_server(port, host, registry=registry(QueueCollector(store.backlog, time.time)))
    except OSError as exc:
        raise WxpushError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") \
            from None


def announce(bind: str, settings: Settings) -> str:
    """Where the server answers and what to try first, for the terminal it starts in."""
    if not bind or bind.startswith(("unix:", "fd://")):
        return f"wxpush serve: listening on {bind or 'the address gunicorn is given'}"
    host, port = parse_address(bind)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://{f'[{host}]' if is_ipv6(host) else host}:{port}"
    lines = [f"wxpush serve: {url} (/healthz answers while it runs; stop it with Ctrl-C)"]
    for appid in settings.apps:
        lines.append(f"  {url}/wechat/{appid}  the pushes of {appid}; in its console: "
                     f"https://<your host>/wechat/{appid}, behind nginx (deploy/nginx.conf)")
    first = next(iter(settings.apps))
    lines.append(f"  try it: wxpush push {url}/wechat/{first} --config {settings.path} "
                 "--text 你好")
    return "\n".join(lines)
