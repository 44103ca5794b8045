"""The client's own transport against real servers on 127.0.0.1: connections kept alive and
shared between threads, one the server closed never used again, TLS checked against the
CA bundle the environment names."""

from __future__ import annotations

import http.server
import json
import os
import resource
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook.errors import Retryable
from webhook.wechat.client import WeChatClient

TOKEN = "ACCESS_TOKEN_SECRET_1234567890"


class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # or Nagle and delayed ACKs slow a keep-alive client
    connections: list[int] = []      # one entry per connection the server accepted
    close_after = False              # close each connection after its answer, unannounced
    announce_close = False           # ... or say so ("Connection: close")

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)

    def do_POST(self) -> None:
        sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"errcode": 0, "touser": sent["touser"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.announce_close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if self.close_after or self.announce_close:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def serving(handler: type[Answer], wrap: ssl.SSLContext | None = None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if wrap is not None:
        server.socket = wrap.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def answering(request) -> Iterator[tuple[str, type[Answer]]]:
    handler = type("Handler", (Answer,), {"connections": [], **getattr(request, "param", {})})
    server, thread = serving(handler)
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()
    thread.join(3)


def send(client: WeChatClient, touser: str) -> None:
    client.send(access_token=TOKEN, touser=touser, payload={"msgtype": "text"})


def test_calls_share_kept_alive_connections_one_per_call_at_once(answering):
    url, handler = answering
    client = WeChatClient(url, connections=4)
    for i in range(20):
        send(client, f"o{i}")
    assert len(handler.connections) == 1
    workers = [threading.Thread(target=lambda n=n: [send(client, f"o{n}-{i}") for i in range(10)])
               for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(handler.connections) <= 4
    client.session.close()


@pytest.mark.parametrize("answering", [{"close_after": True}], indirect=True)
def test_a_connection_the_server_closed_while_idle_is_not_used_again(answering):
    url, handler = answering
    client = WeChatClient(url)
    for i in range(3):
        send(client, f"o{i}")
        time.sleep(0.05)   # the server's close reaches the client
    assert len(handler.connections) == 3
    client.session.close()


@pytest.mark.parametrize("answering", [{"announce_close": True}], indirect=True)
def test_an_answer_that_says_connection_close_closes_it(answering):
    url, handler = answering
    client = WeChatClient(url)
    send(client, "o1")
    send(client, "o2")
    assert len(handler.connections) == 2
    client.session.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return key, cert


def test_tls_is_checked_against_the_ca_bundle_the_environment_names(tls_files, monkeypatch):
    key, cert = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = type("Handler", (Answer,), {"connections": []})
    server, thread = serving(handler, wrap=context)
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(name, raising=False)
        stranger = WeChatClient(url, timeout=(2, 2))
        with pytest.raises(Retryable, match="connection failed"):
            send(stranger, "o1")   # a certificate no CA of certifi's signed
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        trusting = WeChatClient(url, timeout=(2, 2))
        send(trusting, "o1")
        send(trusting, "o2")
        assert len(handler.connections) == 1   # kept alive (the refused handshake got no answer)
        stranger.session.close()
        trusting.session.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(3)


def test_a_kept_alive_connection_past_descriptor_1024_is_reused(answering):
    """A busy process holds many descriptors; the check of an idle connection takes any."""
    url, handler = answering
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit != resource.RLIM_INFINITY and limit < 1200:
        pytest.skip(f"only {limit} file descriptors allowed")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        client = WeChatClient(url)
        send(client, "o1")
        send(client, "o2")
        assert len(handler.connections) == 1
        client.session.close()
    finally:
        for fd in held:
            os.close(fd)


@pytest.mark.parametrize("raw, status, body, closes", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, b"{}", False),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
     200, b"{}", False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3;ext=1\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\nTrailer: x\r\n\r\n", 200, b'{"a":1}\n', False),
    (b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
     502, b"", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, b"{}", True),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
     200, b"{}", False),
    (b"HTTP/1.1 200 OK\r\n\r\nto the end", 200, b"to the end", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", False),
])
def test_an_answer_is_read_by_its_framing(raw, status, body, closes):
    import io

    from webhook.wechat.transport import _answer

    reader = io.BufferedReader(io.BytesIO(raw + (b"" if closes else b"NEXT")))
    got = _answer(reader, "POST")
    assert (got[0], got[3], got[4]) == (status, body, closes)
    if not closes:
        assert reader.read() == b"NEXT"     # the next answer is left where it starts


@pytest.mark.parametrize("raw", [
    b"", b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: nine\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n",
])
def test_an_answer_that_does_not_read_is_an_error_of_http_client_s(raw):
    import http.client
    import io

    from webhook.wechat.transport import _answer

    with pytest.raises(http.client.HTTPException):
        _answer(io.BufferedReader(io.BytesIO(raw)), "POST")
