"""Clients a server must survive while it answers WeChat: a crowd of slow and idle connections,
and pushes sent meanwhile, each one timed."""

from __future__ import annotations

import itertools
import math
import selectors
import socket
import threading
import time

from webhook.testing import PushBuilder

# A push's request head that never ends: the slow clients send it a byte at a time.
SLOW_HEAD = (b"POST /wechat/wx2c2769f8efd9abc2?timestamp=1 HTTP/1.1\r\nHost: wxpush\r\n"
             b"Content-Type: text/xml\r\nX-Slow: " + b"z" * 4000)


class Crowd:
    """``slow`` connections sending a request head one byte a second and ``idle`` ones sending
    nothing, run by one thread; a connection the server closes is opened again at once, so the
    crowd stays whole. Counts what the server did to them."""

    def __init__(self, address: tuple[str, int], *, slow: int, idle: int) -> None:
        self.address, self.slow, self.idle = address, slow, idle
        self.opened = self.closed = self.timed_out = 0   # timed_out: closed with a 408
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crowd", daemon=True)
        self._selector = selectors.DefaultSelector()
        self._sent: dict[socket.socket, int] = {}        # slow connection -> bytes sent

    def __enter__(self) -> Crowd:
        for kind, count in (("slow", self.slow), ("idle", self.idle)):
            for _ in range(count):
                self._open(kind)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()

    def _open(self, kind: str) -> None:
        conn = socket.create_connection(self.address, timeout=5)
        conn.setblocking(False)
        self._selector.register(conn, selectors.EVENT_READ, kind)
        if kind == "slow":
            self._sent[conn] = 0
        self.opened += 1

    def _run(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= tick:
                tick += 1.0
                for conn, sent in list(self._sent.items()):
                    try:
                        conn.send(SLOW_HEAD[sent % len(SLOW_HEAD):][:1])
                        self._sent[conn] = sent + 1
                    except OSError:     # closed by the server: seen by the selector below
                        pass
            for key, _ in self._selector.select(0.05):
                self._on_readable(key.fileobj, key.data)

    def _on_readable(self, conn: socket.socket, kind: str) -> None:
        try:
            answer = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            answer = b""
        if answer.startswith(b"HTTP/1.1 408 "):
            self.timed_out += 1
        self._selector.unregister(conn)
        self._sent.pop(conn, None)
        conn.close()
        self.closed += 1
        if not self._stop.is_set():
            self._open(kind)


class Pushes:
    """Fresh, signed and encrypted text pushes as raw HTTP requests, each with its own MsgId."""

    def __init__(self, appid: str, token: str, aes_key: str) -> None:
        self.appid = appid
        self._builder = PushBuilder(appid=appid, token=token, encoding_aes_key=aes_key)
        self._ids = itertools.count(1)

    def next(self, openid: str) -> bytes:
        fields = {"ToUserName": "gh_0123456789ab", "FromUserName": openid,
                  "CreateTime": int(time.time()), "MsgType": "text", "Content": "你好",
                  "MsgId": next(self._ids)}
        push = self._builder.build(fields)
        return (f"POST {push.url(f'/wechat/{self.appid}')} HTTP/1.1\r\nHost: wxpush\r\n"
                f"Content-Type: text/xml\r\nContent-Length: {len(push.body)}\r\n\r\n"
                ).encode("ascii") + push.body


class Answers:
    """The answers arriving on one connection, one at a time, past any interim (1xx) ones."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn, self._data = conn, b""

    def _more(self, what: str) -> None:
        chunk = self.conn.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed {what}")
        self._data += chunk

    def next(self) -> tuple[int, bytes, bool]:
        """Status, body and whether the server closes the connection after it."""
        while True:
            while b"\r\n\r\n" not in self._data:
                self._more("before an answer")
            head, _, self._data = self._data.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 1"):
                break
        lines = head.split(b"\r\n")
        fields = {k.strip().lower(): v.strip()
                  for k, _, v in (line.partition(b":") for line in lines[1:])}
        length = int(fields.get(b"content-length", b"0"))
        while len(self._data) < length:
            self._more("inside an answer")
        body, self._data = self._data[:length], self._data[length:]
        return int(lines[0].split()[1]), body, fields.get(b"connection", b"").lower() == b"close"


def read_response(conn: socket.socket) -> tuple[int, bytes, bool]:
    """The next answer on ``conn``, when nothing follows it."""
    return Answers(conn).next()


def push_timed(address: tuple[str, int], pushes: Pushes, *, seconds: float, interval: float,
               kept_alive: bool, limit: float = 5.0) -> list[float | None]:
    """Pushes every ``interval`` for ``seconds``, each on a new connection or all on one kept
    alive (opened again when the server closes it); how long each took to be answered
    ``success`` (connecting included on new connections), None if it was not within ``limit``
    (WeChat's 5 s)."""
    took: list[float | None] = []
    conn: socket.socket | None = None
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            request = pushes.next("o-kept-alive" if kept_alive else "o-new")
            started = time.monotonic()
            try:
                if conn is None:
                    conn = socket.create_connection(address, timeout=limit)
                conn.settimeout(max(0.01, started + limit - time.monotonic()))
                conn.sendall(request)
                status, body, closing = read_response(conn)
                took.append(time.monotonic() - started if (status, body) == (200, b"success")
                            else None)
            except OSError:
                took.append(None)
                closing = True
            if (closing or not kept_alive) and conn is not None:
                conn.close()
                conn = None
            time.sleep(max(0.0, started + interval - time.monotonic()))
    finally:
        if conn is not None:
            conn.close()
    return took


def p99(took: list[float]) -> float:
    ordered = sorted(took)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def under_crowd(address: tuple[str, int], pushes: Pushes, *, slow: int, idle: int,
                seconds: float, interval: float = 0.04) -> tuple[Crowd, list[float | None]]:
    """Pushes on new and on kept-alive connections for ``seconds`` while a crowd of ``slow``
    and ``idle`` connections holds on; what each push took, and the crowd."""
    results: list[list[float | None]] = [[], []]

    def run(index: int, kept_alive: bool) -> None:
        results[index] = push_timed(address, pushes, seconds=seconds, interval=interval,
                                    kept_alive=kept_alive)

    with Crowd(address, slow=slow, idle=idle) as crowd:
        time.sleep(1.0)     # the crowd is in, part-way through its heads
        threads = [threading.Thread(target=run, args=(i, kept)) for i, kept in
                   enumerate((False, True))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 30)
    return crowd, results[0] + results[1]
