"""gunicorn's gthread worker, reading each request whole on its own loop before a thread sees
it, so no client, however slow or idle, holds a request thread.

gthread (gunicorn 27) hands a new connection to its thread pool at once: the thread waits up
to 5 s for a first byte (``TConn.wait_for_data``), then reads the head and body from the
socket as slowly as the client sends them. Eight clients sending a byte a second, or a few
idle connections a second, held all four threads, and pushes on new connections waited past
WeChat's 5 s. Here the loop reads every connection with non-blocking reads into a buffer of
its own, measures the request as it arrives (``webhook.server.framing``) and hands it to gunicorn's
parser only once it is whole (``webhook.server.loopconn``: the parser reads those bytes, never the
socket).
A request must arrive whole within ``request_timeout`` of its first byte (of the connection's
opening, for the first one): past it the client is answered 408. A body over the app's
``max_body`` is answered 413 without being read; chunked framing that cannot be read, 400.
Kept-alive connections wait on the loop for ``keepalive`` seconds, costing a file descriptor
each; a worker keeps at most ``worker_connections - threads`` of them, closing the oldest
first, and a full worker closes one that waits (lingering, kept alive, then sending its
request; the oldest first) to take a new one. A connection to close lingers on the loop, not in
a thread, till its client closes too (as gunicorn's ``close_graceful``, RFC 9112 section 9.6).
A client leaving more than ``UNREAD`` bytes of answers unread has its next request wait on the
loop till it reads: its answer might not fit in the send buffer, and would hold a thread (or
the loop) till then.

TLS, the PROXY protocol, HTTP/2 cleartext and uwsgi are left to gthread as they are: TLS
belongs in the proxy in front (deploy/nginx.conf), which also reads each request whole.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import selectors
import socket
import termios
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, ThreadWorker

from webhook.logsafe import Repeats
from webhook.metrics import REJECTIONS
from webhook.server.framing import MALFORMED, MORE, TOO_LARGE
from webhook.server.loopconn import LoopConn, Queue, leave, limits

__all__ = ["WholeRequestWorker", "REQUEST_TIMEOUT", "UNREAD"]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 3.0       # well inside WeChat's 5 s, for a push that takes one packet
BODY_LIMIT = 1024 * 1024    # for an app that names no max_body
READ = 65536                # the most one read takes
LINGER = 2.0                # gunicorn's close_graceful: how long a closing connection is read
LINGER_DRAIN = 65536        # ... and how much of it
# Answers are small (an ack, a sealed hand-off, a JSON object): a send buffer (16 KiB at least
# by default) holding no more than this unread leaves room for one.
UNREAD = 4096
_OUTQ = getattr(termios, "TIOCOUTQ", None)   # SIOCOUTQ: bytes sent and not yet read (Linux)
_DONTWAIT = socket.MSG_DONTWAIT
_GONE = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED)
_NO_FDS = (errno.EMFILE, errno.ENFILE)


def _answer(status: str, reason: str) -> bytes:
    body = reason.encode("ascii")
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body


_TIMED_OUT = _answer("408 Request Timeout", "request not received in time")
_MALFORMED = _answer("400 Bad Request", "malformed chunked body")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class WholeRequestWorker(ThreadWorker):
    """A gthread worker that reads each request whole on its loop (see the module's
    docstring). ``on_loop`` says which whole requests the loop answers itself."""

    request_timeout = REQUEST_TIMEOUT           # gunicorn_conf.py sets it in pre_fork
    clock = staticmethod(time.monotonic)
    _whole = False                              # False: this worker is plain gthread
    _repeats = Repeats()

    def on_loop(self, conn: Any, request: bytes) -> bool:
        """Whether the loop answers this whole request itself rather than a pool thread."""
        return False

    def run(self) -> None:
        self.prepare()
        super().run()

    def prepare(self) -> None:
        """What the loop needs, once gunicorn has loaded the app."""
        cfg = self.cfg
        self._whole = (not cfg.is_ssl and cfg.proxy_protocol == "off"
                       and cfg.http2_cleartext == "off" and getattr(cfg, "protocol", "http") == "http")
        self._limits = limits(cfg, getattr(self.wsgi, "max_body", BODY_LIMIT))
        self._too_large = _answer("413 Payload Too Large", f"body over {self._limits.body} bytes")
        self._idle = Queue()                    # kept alive, nothing of a next request yet
        self._reading = Queue()                 # a request on its way (or its answer's room)
        self._lingering = Queue()
        self._scratch = bytearray(READ)
        self._view = memoryview(self._scratch)
        self._unread = array.array("i", [0])
        self._watches = {"read": (selectors.EVENT_READ, self._on_readable),
                         "write": (selectors.EVENT_WRITE, self._on_writable),
                         "linger": (selectors.EVENT_READ, self._on_lingering)}

    # -- accepting ----------------------------------------------------------------------
    def accept(self, listener: Any) -> None:
        if not self._whole:
            super().accept(listener)
            return
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in _NO_FDS:
                self._repeats.log(log, logging.WARNING, "fds", "no file descriptor for a new "
                                  "connection; closing the oldest waiting one")
                self._make_room()
            elif exc.errno not in _GONE:
                raise
            return
        self.nr_conns += 1
        conn = LoopConn(self.cfg, sock, client, listener.getsockname(), self._limits)
        self._reading.put(conn, self.clock() + self.request_timeout)
        self._watch(conn, "read")
        if self.nr_conns >= self.worker_connections:
            self._make_room()

    def _make_room(self) -> None:
        """Close the connection that has waited longest: lingering first, then kept alive,
        then one still sending its request."""
        for queue in (self._lingering, self._idle, self._reading):
            if queue:
                self._close(queue.oldest())
                return

    # -- reading ------------------------------------------------------------------------
    def _read(self, conn: LoopConn) -> int:
        """How many bytes a read put in the scratch buffer: 0 if the client closed (or reset,
        or the connection was closed meanwhile), -1 if there was nothing to read after all."""
        if conn.closed:
            return -1
        try:
            return conn.sock.recv_into(self._scratch, READ, _DONTWAIT)
        except BlockingIOError:
            return -1
        except OSError:
            return 0

    def _on_readable(self, conn: LoopConn, _sock: Any = None) -> None:
        size = self._read(conn)
        if size < 0:
            return
        if not size:                    # the client is gone: nothing to answer
            self._close(conn)
            return
        data = self._view[:size]
        if conn.buffer:
            if type(conn.buffer) is bytes:  # noqa: E721
                conn.buffer = bytearray(conn.buffer)
            conn.buffer += data
        else:
            conn.buffer = bytes(data)
        self._serve(conn)

    def _serve(self, conn: LoopConn) -> None:
        """Hand on each request the buffer holds whole, then wait for more."""
        while True:
            size = conn.framer.size(conn.buffer) if conn.buffer else MORE
            if size == MORE:
                self._await(conn)
                return
            if size in (TOO_LARGE, MALFORMED):
                if size == TOO_LARGE:
                    self._refuse(conn, self._too_large, "body over max_body", "payload_too_large")
                else:
                    self._refuse(conn, _MALFORMED, "malformed chunked body", "malformed_request")
                return
            if not conn.read_on and self._answers_unread(conn) > UNREAD:
                self._await_reader(conn)
                return
            request, conn.buffer = bytes(conn.buffer[:size]), conn.buffer[size:]
            conn.framer.reset()
            conn.continued = conn.read_on = False
            conn.parser.unreader.hold(request)
            leave(conn)
            if not self.on_loop(conn, request):
                self._unwatch(conn)
                super().enqueue_req(conn)
                return
            keep = self.handle(conn)
            conn.served += 1
            if not keep:
                self._linger(conn)
                return

    def _await(self, conn: LoopConn) -> None:
        """Wait for (more of) the next request, within its deadline."""
        now = self.clock()
        if conn.buffer:
            if conn.waiting is not self._reading:
                self._reading.put(conn, now + self.request_timeout)
            if not conn.continued and conn.framer.expects_continue(conn.buffer):
                conn.continued = True   # the client waits for it before sending the body
                self._send(conn, _CONTINUE)
        elif conn.served:
            linger = self.cfg.keepalive if self.alive else min(self.cfg.keepalive,
                                                                STOP_KEEPALIVE_LINGER)
            self._idle.put(conn, now + linger)
            if len(self._idle) > self.max_keepalived:
                self._close(self._idle.oldest())
                if conn.closed:
                    return
        self._watch(conn, "read")

    def _answers_unread(self, conn: LoopConn) -> int:
        if _OUTQ is None:
            return 0
        try:
            fcntl.ioctl(conn.sock, _OUTQ, self._unread)
        except OSError:         # gone: the answer's write will say so
            return 0
        return self._unread[0]

    def _await_reader(self, conn: LoopConn) -> None:
        """Hold its next request till the socket can take an answer again (the kernel
        says so once a third of the send buffer is free), within the request's deadline."""
        if conn.waiting is not self._reading:
            self._reading.put(conn, self.clock() + self.request_timeout)
        self._watch(conn, "write")

    def _on_writable(self, conn: LoopConn, _sock: Any = None) -> None:
        if not conn.closed:
            conn.read_on = True
            self._serve(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """A pool thread answered: the connection comes back to the loop, or is closed."""
        if not isinstance(conn, LoopConn):
            self._finish_gthread(conn, fs)
            return
        try:
            keep = not fs.cancelled() and fs.result()
        except Exception:   # handle() answers what it can; the connection is done for
            keep = False
        conn.served += 1
        if keep:
            self._serve(conn)
        else:
            self._linger(conn)

    def _finish_gthread(self, conn: Any, fs: Any) -> None:
        """A connection gthread reads: one to close is closed by the pool, since it lingers
        till the client closes too."""
        if self.alive and not fs.cancelled() and fs.exception() is None and fs.result() is False:
            self.nr_conns -= 1
            self.tpool.submit(conn.close, True)
            return
        super().finish_request(conn, fs)

    # -- answering on the loop, closing ----------------------------------------------------
    def _refuse(self, conn: LoopConn, answer: bytes, reason: str, metric: str) -> None:
        REJECTIONS.labels(metric).inc()
        self._repeats.log(log, logging.WARNING, reason, "refused client=%s reason=%s",
                          conn.client[0] if conn.client else "-", reason)
        self._send(conn, answer)
        self._linger(conn)

    def _send(self, conn: LoopConn, data: bytes) -> None:
        """A short answer, if the socket takes it now; a client that does not read gets none."""
        try:
            conn.sock.send(data, _DONTWAIT)
        except OSError:
            pass

    def _linger(self, conn: LoopConn) -> None:
        """Stop sending, and read what the client still sends till it closes (or for
        ``LINGER`` at most), so its last answer is not cut off by a reset."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self._lingering.put(conn, self.clock() + LINGER)
        self._watch(conn, "linger")

    def _on_lingering(self, conn: LoopConn, _sock: Any = None) -> None:
        size = self._read(conn)
        if size < 0:
            return
        conn.drained += size
        if not size or conn.drained >= LINGER_DRAIN:
            self._close(conn)

    def _time_out(self, conn: LoopConn) -> None:
        """Its deadline passed: a request begun gets a 408; a connection that sent nothing, or
        that did not read its answers, is closed."""
        if conn.watched == "write":
            self._repeats.log(log, logging.WARNING, "unread", "closed client=%s reason=answers "
                              "not read", conn.client[0] if conn.client else "-")
            self._close(conn)
        elif conn.buffer:
            self._refuse(conn, _TIMED_OUT, "request not received in time", "request_timeout")
        else:
            self._close(conn)

    def _close(self, conn: LoopConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        leave(conn)
        self._unwatch(conn)
        self.nr_conns -= 1
        conn.close()

    # -- where connections wait ------------------------------------------------------------
    def _watch(self, conn: LoopConn, kind: str) -> None:
        """Have the poller call ``_on_readable`` ("read"), ``_on_writable`` ("write") or
        ``_on_lingering`` ("linger")."""
        if conn.watched == kind:
            return
        event, callback = self._watches[kind]
        if conn.watched is None:
            self.poller.register(conn.sock, event, partial(callback, conn))
        else:
            self.poller.modify(conn.sock, event, partial(callback, conn))
        conn.watched = kind

    def _unwatch(self, conn: LoopConn) -> None:
        if conn.watched is not None:
            conn.watched = None
            self.poller.unregister(conn.sock)

    def murder_keepalived(self, force: bool = False) -> None:
        if not self._whole:
            super().murder_keepalived(force)
            return
        now = self.clock()
        queues = (self._idle, self._reading, self._lingering) if force else (self._idle,)
        for queue in queues:        # forced: the worker is stopping, nothing is waited for
            for conn in queue.due(now, every=force):
                self._close(conn)

    def murder_pending(self) -> None:
        if not self._whole:
            super().murder_pending()
            return
        now = self.clock()
        for conn in self._reading.due(now):
            self._time_out(conn)
        for conn in self._lingering.due(now):
            self._close(conn)

    def _cap_keepalive(self, deadline: float) -> None:
        super()._cap_keepalive(deadline)
        if self._whole:
            self._idle.cap(deadline)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._whole:
            soonest = min((at for q in (self._idle, self._reading, self._lingering)
                           if (at := q.soonest()) is not None), default=None)
            if soonest is not None:
                timeout = max(0.0, min(timeout, soonest - self.clock()))
        super().wait_for_and_dispatch_events(timeout)
