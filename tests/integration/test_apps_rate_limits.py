"""The mini program endpoints' rate limits through ``wxpush serve`` (two gunicorn workers
sharing the buckets in the store) and the emulator: a burst of bogus requests reaches WeChat
only as far as the buckets allow."""

from __future__ import annotations

import http.client
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness import APPID, ServerProcess

pytestmark = pytest.mark.slow

RATE, CLIENT_BURST, APP_BURST = 0.1, 5, 20
LIMITS = (f"rate_per_client = {RATE}\nburst_per_client = {CLIENT_BURST}\n"
          f"rate_per_app = {RATE}\nburst_per_app = {APP_BURST}\n")
RELAYED = ("/sns/jscode2session", "/wxa/business/getuserphonenumber")


@pytest.fixture
def server(servers, emulator, tmp_path, store_url) -> ServerProcess:
    proc = ServerProcess(tmp_path / "server", store=store_url, api_base=emulator.url,
                         server=LIMITS)
    servers.append(proc)
    return proc.start()


def relayed(emulator) -> int:
    return sum(len(emulator.emulator.calls(path)) for path in RELAYED)


def bogus(session: requests.Session, server: ServerProcess, path: str,
          forwarded: str) -> requests.Response:
    """A login or phone code WeChat never issued, from ``forwarded`` as nginx names it."""
    return session.post(f"{server.url}/apps/{APPID}/{path}", json={"code": "bogus"},
                        headers={"X-Forwarded-For": forwarded}, timeout=10)


def check_refusal(answer: requests.Response) -> None:
    assert answer.status_code == 429
    assert answer.headers["Retry-After"].isdigit() and int(answer.headers["Retry-After"]) >= 1
    body = answer.json()
    assert set(body) == {"errcode", "errmsg"} and body["errcode"] == 45011


def test_a_burst_reaches_wechat_only_within_the_buckets(server, emulator):
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool, requests.Session() as session:
        burst = list(pool.map(lambda n: bogus(session, server, ("login", "phone")[n % 2],
                                              "198.51.100.1"), range(60)))
    refill = math.ceil((time.monotonic() - started) * RATE)
    passed = [a for a in burst if a.status_code != 429]
    assert all(a.status_code == 401 for a in passed)          # WeChat refused the codes
    assert len(passed) == relayed(emulator) <= CLIENT_BURST + refill
    for answer in burst:
        if answer.status_code == 429:
            check_refusal(answer)

    # One client's burst leaves the others alone.
    assert bogus(requests.Session(), server, "login", "198.51.100.2").status_code == 401

    # Many clients together: the app's bucket caps them.
    with ThreadPoolExecutor(8) as pool, requests.Session() as session:
        crowd = list(pool.map(lambda n: bogus(session, server, "login", f"203.0.113.{n}"),
                              range(40)))
    refill = math.ceil((time.monotonic() - started) * RATE)
    assert relayed(emulator) <= APP_BURST + refill
    assert sum(a.status_code != 429 for a in crowd) == relayed(emulator) - len(passed) - 1
    assert any("to this app" in a.json()["errmsg"] for a in crowd if a.status_code == 429)


def test_a_peer_that_is_no_proxy_cannot_pick_its_address(server, emulator):
    """127.0.0.2 is not a trusted proxy (only 127.0.0.1 and ::1 are): its X-Forwarded-For,
    new on every request, changes nothing; it is one client."""
    started = time.monotonic()
    answers = []
    for n in range(12):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                          source_address=("127.0.0.2", 0))
        try:
            conn.request("POST", f"/apps/{APPID}/login", body=json.dumps({"code": "bogus"}),
                         headers={"Content-Type": "application/json",
                                  "X-Forwarded-For": f"192.0.2.{n}"})
            response = conn.getresponse()
            answers.append((response.status, response.read()))
        finally:
            conn.close()
    refill = math.ceil((time.monotonic() - started) * RATE)
    assert relayed(emulator) == sum(status != 429 for status, _ in answers)
    assert relayed(emulator) <= CLIENT_BURST + refill
    assert [status for status, _ in answers][-1] == 429


def login_from(source: str, port: int, forwarded: str) -> int:
    """A bogus login sent from the loopback address ``source``, claiming ``forwarded``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0))
    try:
        conn.request("POST", f"/apps/{APPID}/login", body=json.dumps({"code": "bogus"}),
                     headers={"Content-Type": "application/json", "X-Forwarded-For": forwarded})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_behind_nginx_each_client_is_its_own_address(server, emulator, nginx):
    """nginx (deploy/nginx.conf) appends the address it was called from; what a client writes
    in the header itself is left of that and changes nothing."""
    port = nginx(server.port).port
    started = time.monotonic()
    spoofing = [login_from("127.0.0.2", port, f"192.0.2.{n}") for n in range(12)]
    refill = math.ceil((time.monotonic() - started) * RATE)
    assert sum(status != 429 for status in spoofing) <= CLIENT_BURST + refill
    assert spoofing[-1] == 429
    assert login_from("127.0.0.3", port, "192.0.2.1") == 401         # another client
    assert relayed(emulator) == sum(status != 429 for status in spoofing) + 1
