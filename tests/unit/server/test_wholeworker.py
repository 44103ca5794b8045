"""The worker's loop with real sockets and a fake clock: a request reaches the thread pool only
once it is whole, a client gets 408 past its deadline and 413 for a body over the limit, a
client that leaves its answers unread waits on the loop, and idle connections are capped."""

from __future__ import annotations

import select
import selectors
import socket
from collections.abc import Iterator
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from webhook.server.wholeworker import UNREAD, WholeRequestWorker
from webhook.testing import FakeClock

PUSH = (b"POST /wechat/wx1?nonce=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n<xml>")


class Pool:
    """A thread pool that runs nothing: it keeps what it was handed."""

    def __init__(self) -> None:
        self.handed: list = []

    def submit(self, fn, conn) -> Future:
        self.handed.append(conn)
        return Future()


class Loop:
    """A worker as gunicorn runs it, driven a step at a time, and its listening socket."""

    def __init__(self, clock: FakeClock, *, connections: int = 1000, threads: int = 4) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        worker = WholeRequestWorker.__new__(WholeRequestWorker)
        worker.cfg = Config()
        worker.poller, worker.tpool, worker.clock = selectors.DefaultSelector(), Pool(), clock
        worker.alive, worker.nr_conns = True, 0
        worker.worker_connections, worker.max_keepalived = connections, connections - threads
        worker.wsgi = SimpleNamespace(max_body=4096)
        worker.prepare()
        self.worker, self.clients = worker, []

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        client = socket.socket()
        if rcvbuf:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client.connect(self.listener.getsockname())
        client.settimeout(5)
        self.clients.append(client)
        select.select([self.listener], [], [], 5)
        self.worker.accept(self.listener)
        return client

    def step(self, times: int = 5) -> None:
        for _ in range(times):
            self.worker.wait_for_and_dispatch_events(0.02)
            self.worker.murder_keepalived()
            self.worker.murder_pending()

    @property
    def handed(self) -> list:
        return self.worker.tpool.handed

    def close(self) -> None:
        for conn in self.handed:
            conn.close()
        for client in self.clients:
            client.close()
        self.listener.close()
        self.worker.murder_keepalived(force=True)
        self.worker.poller.close()


@pytest.fixture
def loop(clock) -> Iterator[Loop]:
    running = Loop(clock)
    yield running
    running.close()


def test_a_request_reaches_the_pool_only_once_it_is_whole(loop):
    client = loop.connect()
    for byte in PUSH[:-1]:
        client.send(bytes([byte]))
        loop.step(1)
    assert loop.handed == []
    client.send(PUSH[-1:])
    loop.step()
    [conn] = loop.handed
    request = next(conn.parser)                 # from what the loop read, not the socket
    assert (request.path, request.body.read()) == ("/wechat/wx1", b"<xml>")


def test_past_its_deadline_a_request_begun_gets_408_and_a_silent_connection_is_closed(loop,
                                                                                      clock):
    slow, silent = loop.connect(), loop.connect()
    slow.send(PUSH[:20])
    loop.step()
    clock.advance(loop.worker.request_timeout - 0.1)
    loop.step()
    assert loop.worker.nr_conns == 2
    clock.advance(0.2)
    loop.step()
    answer = slow.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert answer.endswith(b"request not received in time")
    assert slow.recv(4096) == b"" and silent.recv(4096) == b""
    loop.step()
    assert loop.handed == []


def test_a_body_over_the_limit_is_refused_from_its_head(loop):
    client = loop.connect()
    client.send(b"POST /wechat/wx1 HTTP/1.1\r\nContent-Length: 4097\r\n\r\n")
    loop.step()
    answer = client.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 Payload Too Large\r\n")
    assert answer.endswith(b"body over 4096 bytes")
    assert loop.handed == []


def test_a_client_leaving_its_answers_unread_waits_on_the_loop_till_it_reads(loop):
    """Its next answer might not fit in the send buffer: a thread writing it would wait for
    that client."""
    client = loop.connect(rcvbuf=4096)
    loop.step()
    [conn] = loop.worker._reading
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    unread = 0
    while True:                                 # answers the client does not read
        try:
            unread += conn.sock.send(b"x" * 1500, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
    assert unread > UNREAD
    client.send(PUSH)
    loop.step()
    assert loop.handed == [] and conn.watched == "write"
    while unread:
        unread -= len(client.recv(65536))
    loop.step()
    assert loop.handed == [conn]


def done(result: bool) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future


def test_a_worker_keeps_so_many_idle_connections_closing_the_oldest_first(clock):
    loop = Loop(clock, connections=6, threads=4)           # 2 kept alive at most
    try:
        clients = []
        for _ in range(3):
            clients.append(loop.connect())
            clients[-1].send(PUSH)
            loop.step()
            loop.worker.finish_request(loop.handed[-1], done(True))   # answered, kept alive
        assert clients[0].recv(4096) == b""
        assert list(loop.worker._idle) == loop.handed[1:]
    finally:
        loop.close()


def test_a_full_worker_closes_its_oldest_waiting_connection_to_take_a_new_one(clock):
    loop = Loop(clock, connections=3, threads=1)
    try:
        first, second = loop.connect(), loop.connect()
        loop.connect()
        assert loop.worker.nr_conns == 2
        assert first.recv(4096) == b""
        second.send(PUSH)
        loop.step()
        assert len(loop.handed) == 1
    finally:
        loop.close()
