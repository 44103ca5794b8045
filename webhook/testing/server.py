"""``serve()``: run any WSGI app on 127.0.0.1 in a background thread, for tests and demos.

It speaks HTTP/1.1 with keep-alive, as WeChat's API servers do, so a client's connection
pool is used as it would be against WeChat (wsgiref alone answers one request per connection).
"""

from __future__ import annotations

import io
import socketserver
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

__all__ = ["serve", "RunningServer"]


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024   # a burst of test clients must queue, not be reset
    accepted = 0                # connections accepted so far

    def process_request(self, request: Any, client_address: Any) -> None:
        self.accepted += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timed-out test client) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Response(ServerHandler):
    """One response; ``framed`` once it is known to carry a Content-Length."""

    http_version = "1.1"
    framed = False

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        self.framed = "Content-Length" in self.headers


class _KeepAliveHandler(WSGIRequestHandler):
    """Requests one after another on a connection until the client closes it, asks to, or
    stays silent for ``timeout`` seconds. No access log on stderr."""

    protocol_version = "HTTP/1.1"
    timeout = 30
    disable_nagle_algorithm = True   # headers and body are two writes: no 40 ms ACK wait

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except TimeoutError:
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():   # an error was sent; parse_request set close_connection
            return
        if "Transfer-Encoding" in self.headers:   # no chunked bodies: read to the close
            self.close_connection = True
            body = self.rfile
        else:
            length = self.headers.get("Content-Length") or "0"
            if not length.isdigit():
                self.send_error(400, "bad Content-Length")
                return
            body = io.BytesIO(self.rfile.read(int(length)))
        response = _Response(body, self.wfile, self.get_stderr(), self.get_environ(),
                             multithread=True)
        response.request_handler = self
        response.run(self.server.get_app())
        if not response.framed:   # the body ends where the connection does
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""


@dataclass(slots=True)
class RunningServer:
    """A started server: ``url`` like ``http://127.0.0.1:54321``; ``stop()`` shuts it down."""

    url: str
    port: int
    _server: WSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def connections(self) -> int:
        """The TCP connections it accepted so far."""
        return self._server.accepted

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
                         handler_class=_KeepAliveHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"wsgi-{server.server_port}", daemon=True)
    thread.start()
    port = server.server_port
    return RunningServer(url=f"http://{host}:{port}", port=port, _server=server, _thread=thread)
