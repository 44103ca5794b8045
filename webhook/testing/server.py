"""``serve()``: run any WSGI app on 127.0.0.1 in a background thread, for tests and demos."""

from __future__ import annotations

import socketserver
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["serve", "RunningServer"]


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024   # a burst of test clients must queue, not be reset

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timed-out test client) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""


@dataclass(slots=True)
class RunningServer:
    """A started server: ``url`` like ``http://127.0.0.1:54321``; ``stop()`` shuts it down."""

    url: str
    port: int
    _server: WSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(wsgi_app: Callable[..., Any], *, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve ``wsgi_app`` with a threaded wsgiref server (daemon threads, no access log).

    ``port=0`` picks a free port; the chosen one is in the result."""
    server = make_server(host, port, wsgi_app, server_class=_ThreadingServer,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"wsgi-{server.server_port}", daemon=True)
    thread.start()
    port = server.server_port
    return RunningServer(url=f"http://{host}:{port}", port=port, _server=server, _thread=thread)
