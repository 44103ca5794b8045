"""gunicorn settings for ``wxpush serve`` (``gunicorn -c python:webhook.server.gunicorn_conf``),
part of the package so that an installed wxpush serves from any directory; ``gunicorn.conf.py``
at the root of the checkout imports it, for gunicorn run by hand there. Every value can be
set by an environment variable; ``wxpush serve --bind/--workers`` set those variables, so
flags win over the environment, which wins over the defaults here."""

import logging
import os
import re

from gunicorn.glogging import CONFIG_DEFAULTS, Logger

from webhook.logsafe import Repeats, shown
from webhook.server import fairworker

_env = os.environ.get

# The composition root builds the app in each worker after the fork, so every worker has its
# own store connections, HTTP keep-alive pool and background threads.
wsgi_app = "webhook.server.app:get_app()"
preload_app = False

# WeChat only calls port 80/443, and its pushes come over HTTPS: TLS belongs in the proxy in
# front (deploy/nginx.conf), so bind to loopback by default. gunicorn's own TLS (certfile,
# keyfile) still works, but its worker then reads requests in its threads as stock gthread
# does, where a slow or idle client holds a thread (webhook/server/wholeworker.py).
bind = _env("WXPUSH_BIND", "127.0.0.1:8000")

# Pushes are CPU-light (verify, decrypt, one store write): about one worker per core.
workers = int(_env("WXPUSH_WORKERS", "2"))

# A gthread worker that reads each request whole on its loop before a thread handles it
# (webhook/server/wholeworker.py), and takes no more than its share of the connections
# (webhook/server/fairworker.py). Handlers never run on request threads, so a few are enough.
worker_class = _env("WXPUSH_WORKER_CLASS", "webhook.server.fairworker.FairThreadWorker")
threads = int(_env("WXPUSH_THREADS", "4"))

# A request must arrive whole (head and body) within this many seconds of its first byte, or
# of the connection's opening for its first request; past it the client is answered 408. The
# worker reads it on its loop meanwhile, so a slow client costs a file descriptor, no thread.
request_timeout = float(_env("WXPUSH_REQUEST_TIMEOUT", "3"))

# A request takes milliseconds; a worker silent for this long is stuck and is restarted.
# WeChat itself gives up after 5 s, so nothing useful happens past that anyway.
timeout = int(_env("WXPUSH_TIMEOUT", "30"))

# On SIGTERM workers stop claiming and finish in-flight sends within this time.
graceful_timeout = int(_env("WXPUSH_GRACEFUL_TIMEOUT", "20"))

# WeChat reuses connections; keep them a little while.
keepalive = int(_env("WXPUSH_KEEPALIVE", "5"))
# ... but not forever: a connection answers this many requests, then is closed (Apache's
# MaxKeepAliveRequests, 100 by default; 0: no limit). Workers share connections as they are
# opened; reconnecting spreads a proxy's long-lived ones again, e.g. onto a worker started
# after them (a restarted one).
keepalive_requests = int(_env("WXPUSH_KEEPALIVE_REQUESTS", "100"))

# WeChat's request line is short (path + 6 query parameters): refuse anything far larger early.
limit_request_line = int(_env("WXPUSH_LIMIT_REQUEST_LINE", "2048"))
limit_request_fields = int(_env("WXPUSH_LIMIT_REQUEST_FIELDS", "50"))
limit_request_field_size = int(_env("WXPUSH_LIMIT_REQUEST_FIELD_SIZE", "4096"))

# gunicorn 27 opens a control socket for gunicornc at $XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl: one path for every gunicorn on the host, so a second server takes
# it from the first. wxpush serve is driven by signals (wxpush serve forwards them): none.
control_socket_disable = True

# Our own log lines (key=value, never a secret) go to stderr beside gunicorn's, as text or, with
# [server] log_format = "json" (wxpush serve passes it on), one JSON object a line.
loglevel = _env("WXPUSH_LOG_LEVEL", "info")
accesslog = _env("WXPUSH_ACCESS_LOG") or None
log_format = _env("WXPUSH_LOG_FORMAT", "text")


class QuietAccessLogger(Logger):
    """gunicorn builds every request's access-log fields whenever a logging config is given
    (as below), even with the access logger off: a tenth of a request's cost. Built here only
    when the line is written."""

    def access(self, resp, req, environ, request_time):
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


class RequestErrors(logging.Filter):
    """gunicorn writes a line for each request it cannot parse, quoting what the client sent
    ("Invalid request from ip=...: Invalid HTTP request line: '...'"), and for each request
    that fails in the worker: such lines are escaped and cut short (``logsafe.shown``), and
    those of one kind go out once per interval, with a count."""

    _KIND_END = re.compile(r"[:('\"]")

    def __init__(self, repeats: Repeats | None = None) -> None:
        super().__init__()
        self._repeats = repeats or Repeats()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Invalid request from ip="):
            # "...: Invalid HTTP request line: 'GET ...'": gunicorn's words before the client's
            error = message.partition(": ")[2]
            kind = "invalid " + self._KIND_END.split(error, maxsplit=1)[0][:60]
        elif message.startswith("Error handling request"):
            kind = "failed"
        else:
            return True
        held = self._repeats.admit(kind)
        if held is None:
            return False
        record.msg = shown(message, 200) + (f" repeated={held}" if held else "")
        record.args = ()
        return True


logger_class = QuietAccessLogger
logconfig_dict = {
    **CONFIG_DEFAULTS,
    **({"formatters": {"generic": {"()": "webhook.logformat.JsonFormatter"}}}
       if log_format == "json" else {}),
    "filters": {"request_errors": {"()": RequestErrors}},
    # Each logger writes once, to its own handler; the access log only when asked for.
    "root": {"level": "WARNING", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["error_console"],
                           "filters": ["request_errors"], "propagate": False,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO" if accesslog else "WARNING", "handlers": ["console"],
                            "propagate": False, "qualname": "gunicorn.access"},
        **{name: {"handlers": ["error_console"], "level": loglevel.upper(), "propagate": False}
           for name in ("webhook", "handlers")},
    },
}


def pre_request(worker, req):
    """The last request of a connection says ``Connection: close`` (``keepalive_requests``)."""
    if keepalive_requests and req.req_number >= keepalive_requests:
        req.force_close()


def pre_fork(server, worker):
    """The master gives each new worker its place for its connection count, and its
    request_timeout."""
    fairworker.take_slot(server, worker)
    worker.request_timeout = request_timeout


def child_exit(server, worker):
    """... and takes it back when the worker is gone, however it died (its live metrics
    gauges go with it; its counts stay counted)."""
    fairworker.free_slot(worker)
    if _env("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Start this worker's rules reloader and, unless a delivery process runs them (SQLite
    with ``wxpush serve``), its handlers and senders, once its app is loaded."""
    worker.wsgi.start()


def worker_exit(server, worker):
    """Graceful shutdown: stop claiming, let running handlers and sends finish."""
    app = getattr(worker, "wsgi", None)
    if hasattr(app, "stop"):
        app.stop(timeout=graceful_timeout - 2)
