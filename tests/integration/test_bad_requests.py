"""A flood of bad requests through a real ``wxpush serve``: every one refused with a 4xx, and
the log stays small and holds no character a request sent to forge a line."""

from __future__ import annotations

import logging
import re
import runpy
import socket
import threading
import time
from urllib.parse import quote, urlencode

import pytest

from webhook.logsafe import Repeats
from webhook.testing import PushBuilder
from webhook.testing.clock import FakeClock
from webhook.testing.factories import make_text

from harness import AES_KEY, APPID, ROOT, TOKEN, ServerProcess

pytestmark = pytest.mark.slow

FORGED = "[2024-01-01 00:00:00 +0000] [1] [ERROR] store unavailable"
# Percent-escapes falcon decodes into the path: newline, carriage return, escape, NUL
HOSTILE = quote("FAKE\n" + FORGED + "\r\x1b[31m\x00", safe="")
REQUESTS, THREADS, DEADLINE = 20_000, 4, 60.0
RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def request(method: str, target: str, body: bytes = b"",
            content_type: str = "application/xml") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def kinds() -> dict[str, tuple[bytes, int]]:
    """Each kind of bad request, as bytes, and the status it must get."""
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
    push = builder.build(make_text("hi", msg_id=1))
    forged_signature = urlencode({**push.query, "msg_signature": "0" * 40})
    no_timestamp = urlencode({k: v for k, v in push.query.items() if k != "timestamp"})
    return {
        "bad signature": (request("POST", f"/wechat/{APPID}?{forged_signature}", push.body), 403),
        "unknown app": (request("POST", f"/wechat/{HOSTILE}?{urlencode(push.query)}", push.body),
                        404),
        "malformed": (request("POST", f"/wechat/{APPID}?{no_timestamp}&x={HOSTILE}", push.body),
                      400),
        "garbage": (request("POST", f"/wechat/{APPID}?{urlencode(push.query)}", b"<xml>\x1b"),
                    400),
        "oversized": (request("POST", f"/wechat/{APPID}?{urlencode(push.query)}", b"x" * 1100),
                      413),
        "not json": (request("POST", f"/apps/{APPID}/login", b"code=1", "text/plain"), 415),
        "unknown mini program": (request("POST", f"/apps/{HOSTILE}/login", b'{"code": "1"}',
                                         "application/json"), 404),
    }


class KeptAlive:
    """One connection, opened again whenever the server closes it (keepalive_requests)."""

    def __init__(self, port: int) -> None:
        self.port, self.sock, self.buffer = port, None, b""

    def ask(self, data: bytes) -> int:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self.buffer = b""
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)[1])
        while len(self.buffer) < length:
            self._read()
        self.buffer = self.buffer[length:]
        if re.search(rb"(?i)\r\nconnection: *close", head):
            self.close()
        return int(head.split(b" ", 2)[1])

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-answer")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def flood(port: int, share: list[tuple[str, bytes, int]], deadline: float,
          wrong: list[str]) -> None:
    client = KeptAlive(port)
    try:
        for name, data, status in share:
            if time.monotonic() > deadline:
                wrong.append("out of time")
                return
            got = client.ask(data)
            if got != status:
                wrong.append(f"{name}: {got}")
    finally:
        client.close()


def invalid_request_line(port: int, index: int) -> None:
    """What gunicorn itself refuses, and logs: a raw escape and NUL in the request line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /wechat/\x1b[31m\x00" + str(index).encode() + b" HTTP/1.1\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")


def test_a_flood_of_bad_requests_writes_a_small_log_that_no_request_can_forge(tmp_path):
    server = ServerProcess(tmp_path / "server", store=f"sqlite:///{tmp_path}/wxpush.db",
                           api_base="http://127.0.0.1:9",
                           # the rate limits of /apps would answer most of the flood 429
                           server="max_body = 1024\nrate_per_client = 100000\n"
                                  "burst_per_client = 1000000\nrate_per_app = 100000\n"
                                  "burst_per_app = 1000000")
    server.start()
    try:
        before = server.log.stat().st_size
        cases = [(name, data, status) for name, (data, status) in kinds().items()]
        plan = [cases[i % len(cases)] for i in range(REQUESTS)]
        wrong: list[str] = []
        deadline = time.monotonic() + DEADLINE
        threads = [threading.Thread(target=flood, args=(server.port, plan[i::THREADS], deadline,
                                                         wrong)) for i in range(THREADS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE + 10)
        for index in range(200):
            invalid_request_line(server.port, index)
        elapsed = time.monotonic() - started
        time.sleep(0.5)                    # the last lines reach the file
        written = server.log.stat().st_size - before
        logs = server.logs()
    finally:
        server.stop()
    assert not wrong, wrong[:5]
    assert written < 256 * 1024, f"{written} bytes of log for {REQUESTS} bad requests"
    lines = logs.splitlines()
    assert not [line for line in lines if RAW_CONTROL.search(line)]
    assert not [line for line in lines if line.startswith(FORGED[:20])]
    assert "rejected POST /wechat/FAKE\\n[2024" in logs          # shown, escaped
    assert "Invalid HTTP request line: 'GET /wechat/\\\\x1b[31m\\\\x00" in logs
    assert logs.count("Invalid HTTP request line") <= 2 * server.workers   # not one each
    print(f"{REQUESTS} bad requests in {elapsed:.1f} s wrote {written} bytes of log")


def test_gunicorns_request_errors_are_escaped_capped_and_counted():
    """The filter gunicorn.conf.py puts on gunicorn.error; some of gunicorn's messages quote
    the client with %s, not %r."""
    clock = FakeClock(0.0)
    errors = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["RequestErrors"](
        Repeats(10.0, clock=clock))

    def passed(message: str, *args: object) -> str | None:
        record = logging.LogRecord("gunicorn.error", logging.WARNING, __file__, 1, message,
                                   args, None)
        return record.getMessage() if errors.filter(record) else None

    line = passed("Invalid request from ip=%s: %s", "10.0.0.1",
                  "Invalid chunk extension: x\n" + FORGED + "y" * 500)
    assert line.startswith("Invalid request from ip=10.0.0.1: Invalid chunk extension: x\\n[")
    assert not RAW_CONTROL.search(line) and len(line) < 230
    assert [passed("Invalid request from ip=10.0.0.2: Invalid chunk extension: z")
            for _ in range(50)] == [None] * 50
    assert passed("Invalid request from ip=10.0.0.1: Invalid HTTP request line: 'x'")
    clock.advance(10.0)
    assert passed("Invalid request from ip=1.2.3.4: Invalid chunk extension: w").endswith(
        " repeated=50")
    assert passed("Booting worker with pid: %s", 42) == "Booting worker with pid: 42"
