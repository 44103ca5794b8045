"""deploy/nginx.conf in Debian's nginx, in front of a real ``wxpush serve``: what every real
install has, since WeChat calls only HTTPS."""

from __future__ import annotations

import requests
import pytest

from crowd import Pushes, p99, under_crowd
from harness import AES_KEY, APPID, TOKEN, ServerProcess

pytestmark = pytest.mark.slow


def test_slow_and_idle_clients_at_the_proxy_hold_up_no_push(servers, emulator, nginx,
                                                             tmp_path):
    server = ServerProcess(tmp_path / "server", store=f"sqlite:///{tmp_path}/wxpush.db",
                           api_base=emulator.url)
    servers.append(server.start())
    proxy = nginx(server.port)
    crowd, took = under_crowd(("127.0.0.1", proxy.port), Pushes(APPID, TOKEN, AES_KEY),
                              slow=200, idle=200, seconds=8.0)
    answered = [t for t in took if t is not None]
    assert len(answered) == len(took) > 100, f"{len(took) - len(answered)} of {len(took)} unanswered"
    assert p99(answered) < 0.2, f"p99 {p99(answered) * 1000:.0f} ms"
    assert crowd.closed >= 400, "nginx kept slow and idle clients past its timeouts"


def test_the_proxy_refuses_a_body_over_max_body(servers, emulator, nginx, tmp_path):
    server = ServerProcess(tmp_path / "server", store=f"sqlite:///{tmp_path}/wxpush.db",
                           api_base=emulator.url)
    servers.append(server.start())
    proxy = nginx(server.port)
    url = f"http://127.0.0.1:{proxy.port}/wechat/{APPID}"
    assert requests.post(url, data=b"x" * (64 * 1024 + 1), timeout=5).status_code == 413
    assert requests.get(f"http://127.0.0.1:{proxy.port}/healthz", timeout=5).text == "ok"
