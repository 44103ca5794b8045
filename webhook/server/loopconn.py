"""A connection as the worker's loop reads it (``webhook.server.wholeworker``): the bytes it
has sent so far, the request they measure up to (``webhook.server.framing``), gunicorn's
parser reading a whole request from them rather than from the socket, and the queues it waits
in."""

from __future__ import annotations

import io
import socket
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import Unreader
from gunicorn.workers.gthread import TConn

from webhook.server.framing import Framer, Limits

__all__ = ["LoopConn", "HeldBytes", "Queue", "leave", "limits"]


def limits(cfg: Any, body: int) -> Limits:
    """gunicorn's limits on a request head, as its parser applies them (0 or less: its
    maximum), and ``body``."""
    fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= MAX_HEADERS \
        else MAX_HEADERS
    field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 \
        else DEFAULT_MAX_HEADERFIELD_SIZE
    line = cfg.limit_request_line if 0 < cfg.limit_request_line < MAX_REQUEST_LINE \
        else MAX_REQUEST_LINE
    return Limits(line=line, head=fields * (field_size + 2) + 4, chunk_line=field_size, body=body)


class HeldBytes(Unreader):
    """What gunicorn's parser reads a request from: the bytes the loop read, never the socket.
    Handed out as a socket read would (8 KiB, or what a body says it still needs), so a head
    over gunicorn's limits fails in the parser as it would reading the socket."""

    def __init__(self) -> None:
        super().__init__()
        self._data = b""
        self._at = 0

    def hold(self, data: bytes) -> None:
        self.buf = io.BytesIO()
        self._data, self._at = data, 0

    def chunk(self, size_hint: int | None = None) -> bytes:
        size = max(8192, size_hint or 0)
        piece = self._data[self._at:self._at + size]
        self._at += len(piece)
        return piece


class LoopConn(TConn):
    """A connection the loop reads: what it has sent so far, and where it waits."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any,
                 limits: Limits) -> None:
        super().__init__(cfg, sock, client, server)
        self.initialized = True                 # nothing for gthread's init() to do
        self.parser = RequestParser(cfg, (), client)
        self.parser.unreader = HeldBytes()
        self.framer = Framer(limits)
        self.buffer: bytes | bytearray = b""
        self.served = 0                         # requests answered on it
        self.continued = False                  # 100 Continue sent for the request read now
        self.waiting: Queue | None = None       # which of the worker's queues holds it
        self.watched: str | None = None         # on the poller: "read", "write" or "linger"
        self.read_on = False                    # it read its answers since it was last held
        self.drained = 0                        # bytes read while lingering
        self.closed = False


class Queue:
    """Connections waiting for one thing, in the order of their deadlines: a deadline is a
    fixed time after entering the queue, so the first one in is the first one due."""

    def __init__(self) -> None:
        self._conns: OrderedDict[LoopConn, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._conns)

    def __iter__(self) -> Iterator[LoopConn]:
        return iter(list(self._conns))

    def put(self, conn: LoopConn, deadline: float) -> None:
        leave(conn)
        self._conns[conn] = deadline
        conn.waiting = self

    def oldest(self) -> LoopConn:
        return next(iter(self._conns))

    def soonest(self) -> float | None:
        """The first deadline, if any."""
        return next(iter(self._conns.values())) if self._conns else None

    def due(self, now: float, *, every: bool = False) -> Iterator[LoopConn]:
        """Each connection whose deadline has passed (``every``: all of them), taken out of
        the queue before it is given."""
        while self._conns:
            conn, deadline = next(iter(self._conns.items()))
            if deadline > now and not every:
                return
            leave(conn)
            yield conn

    def cap(self, deadline: float) -> None:
        """No deadline later than ``deadline`` (the order stays)."""
        for conn, at in list(self._conns.items()):
            self._conns[conn] = min(at, deadline)


def leave(conn: LoopConn) -> None:
    """Take ``conn`` out of the queue it waits in, if any."""
    if conn.waiting is not None:
        del conn.waiting._conns[conn]
        conn.waiting = None
