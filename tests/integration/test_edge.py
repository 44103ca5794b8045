"""The server's edge under slow, idle and hostile clients: ``wxpush serve`` for real, with two
workers, answers every push in time whatever the other connections do."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from crowd import Answers, Pushes, p99, read_response, under_crowd
from harness import AES_KEY, APPID, TOKEN, ServerProcess

pytestmark = pytest.mark.slow

SLOW = IDLE = 200
SECONDS = 8.0


def test_slow_and_idle_connections_hold_up_no_push(servers, emulator, tmp_path, store_url):
    """200 connections sending a byte a second and 200 sending nothing (each opened again
    when the server drops it) take no request thread: pushes on new and on kept-alive
    connections are all answered, and quickly."""
    server = ServerProcess(tmp_path / "server", store=store_url, api_base=emulator.url)
    servers.append(server.start())
    crowd, took = under_crowd(("127.0.0.1", server.port), Pushes(APPID, TOKEN, AES_KEY),
                              slow=SLOW, idle=IDLE, seconds=SECONDS)
    answered = [t for t in took if t is not None]
    assert len(answered) == len(took) > 100, f"{len(took) - len(answered)} of {len(took)} unanswered"
    assert p99(answered) < 0.2, f"p99 {p99(answered) * 1000:.0f} ms"
    assert crowd.timed_out >= SLOW, "slow clients were not answered 408 at their deadline"


def start(servers, emulator, tmp_path, **kwargs) -> ServerProcess:
    server = ServerProcess(tmp_path / "server", store=f"sqlite:///{tmp_path}/wxpush.db",
                           api_base=emulator.url, **kwargs)
    servers.append(server)
    return server.start()


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def closed_by_server(conn: socket.socket) -> bool:
    try:
        return conn.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_a_request_not_whole_in_time_is_answered_408_and_a_silent_connection_closed(
        servers, emulator, tmp_path):
    server = start(servers, emulator, tmp_path, workers=1, env={"WXPUSH_REQUEST_TIMEOUT": "1"})
    pushes = Pushes(APPID, TOKEN, AES_KEY)
    with connect(server) as kept:
        kept.sendall(pushes.next("o-kept"))
        assert read_response(kept)[:2] == (200, b"success")
        started = time.monotonic()      # a first request's time runs from the connection's opening
        with connect(server) as partial, connect(server) as silent:
            partial.sendall(pushes.next("o-partial")[:-10])
            status, body, closing = read_response(partial)
            assert (status, body, closing) == (408, b"request not received in time", True)
            assert 0.9 < time.monotonic() - started < 2.5
            assert closed_by_server(partial)
            assert closed_by_server(silent)
        kept.sendall(pushes.next("o-kept"))            # kept alive: keepalive's 5 s, not 1
        assert read_response(kept)[:2] == (200, b"success")


def test_a_body_over_max_body_is_refused_before_it_is_sent(servers, emulator, tmp_path):
    server = start(servers, emulator, tmp_path, server="max_body = 4096")
    with connect(server) as conn:
        conn.sendall(b"POST /wechat/%s HTTP/1.1\r\nHost: h\r\nContent-Length: 100000000\r\n\r\n"
                     % APPID.encode())
        assert read_response(conn) == (413, b"body over 4096 bytes", True)
        assert closed_by_server(conn)


@pytest.mark.parametrize("head, status", [
    (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + (b"X-Pad: " + b"p" * 4000 + b"\r\n") * 60 + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n<xml>", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
], ids=["line", "headers", "lengths", "chunked"])
def test_a_request_gunicorn_or_its_framing_refuses_gets_its_4xx(servers, emulator, tmp_path,
                                                               head, status):
    server = start(servers, emulator, tmp_path, workers=1)
    with connect(server) as conn:
        conn.sendall(head)
        assert read_response(conn)[0] == status
    assert requests.get(server.url + "/healthz", timeout=5).text == "ok"


def test_a_client_waiting_for_100_continue_gets_it_and_then_its_answer(servers, emulator,
                                                                      tmp_path):
    server = start(servers, emulator, tmp_path)
    push = Pushes(APPID, TOKEN, AES_KEY).next("o-expect")
    head, _, body = push.partition(b"\r\n\r\n")
    with connect(server) as conn:
        conn.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        assert conn.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(body)
        assert read_response(conn)[:2] == (200, b"success")


def test_pipelined_requests_are_answered_in_order(servers, emulator, tmp_path):
    server = start(servers, emulator, tmp_path)
    pushes = Pushes(APPID, TOKEN, AES_KEY)
    last = pushes.next("o-pipe")
    with connect(server) as conn:
        conn.sendall(pushes.next("o-pipe") + b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
                     + last[:-3])
        answers = Answers(conn)
        assert answers.next()[:2] == (200, b"success")
        assert answers.next()[:2] == (200, b"ok")
        conn.sendall(last[-3:])
        assert answers.next()[:2] == (200, b"success")


def test_a_worker_keeps_so_many_idle_connections_closing_the_oldest_first(servers, emulator,
                                                                          tmp_path):
    """worker_connections 20, 4 threads: 16 kept alive at most; and a worker holding 20
    connections that send nothing closes the oldest to take a new one."""
    server = start(servers, emulator, tmp_path, workers=1,
                   env={"GUNICORN_CMD_ARGS": "--worker-connections 20"})
    kept = []
    for _ in range(20):
        conn = connect(server)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(conn)[1] == b"ok"
        kept.append(conn)
    silent = [connect(server) for _ in range(25)]
    try:
        assert all(closed_by_server(conn) for conn in kept[:4])
        with connect(server) as conn:
            started = time.monotonic()
            conn.sendall(Pushes(APPID, TOKEN, AES_KEY).next("o-room"))
            assert read_response(conn)[:2] == (200, b"success")
            assert time.monotonic() - started < 1.0
        assert closed_by_server(silent[0])
    finally:
        for conn in kept + silent:
            conn.close()
