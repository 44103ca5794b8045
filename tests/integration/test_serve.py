"""``wxpush serve`` as a new user meets it: a bot's router beside wxpush.toml, where it
answers and what to try; on a host shared with other servers: it keeps to its own files, and
a port already taken is one line and nothing started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import requests

from webhook.testing import PushBuilder

from harness import AES_KEY, APPID, ROOT, TOKEN, ServerProcess, wait_for

pytestmark = pytest.mark.slow


SHOPBOT = """from webhook import TEXT, Router, TextReply

router = Router(name="shop")


@router.message(TEXT)
def echo(message, ctx):
    return TextReply("shopbot: " + message.content)
"""


def test_a_router_beside_the_config_answers_without_pythonpath(servers, emulator, tmp_path,
                                                              store_url):
    """The README's routers = ["mybot:router"], with mybot.py beside wxpush.toml: imported
    by the request workers and the process that runs the handlers (the delivery process with
    SQLite, the workers with Redis), none of which runs in that directory."""
    server = ServerProcess(tmp_path / "shop", store=store_url, api_base=emulator.url,
                           server='routers = ["shopbot:router"]', env={"PYTHONPATH": ""})
    (server.directory / "shopbot.py").write_text(SHOPBOT, encoding="utf-8")
    servers.append(server.start())
    push = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY).text("你好")
    emulator.emulator.notify_push(APPID, push.fields)
    answer = requests.post(f"{server.url}/wechat/{APPID}", params=push.query, data=push.body,
                           timeout=10)
    assert answer.text == "success"
    sent = wait_for(lambda: emulator.emulator.sent(APPID))
    assert [payload["text"]["content"] for _, _, payload in sent] == ["shopbot: 你好"]


def test_serve_says_where_it_answers_and_what_to_try(servers, emulator, tmp_path):
    server = ServerProcess(tmp_path / "s", store=f"sqlite:///{tmp_path}/s.db",
                           api_base=emulator.url)
    servers.append(server.start())
    logs = server.logs()
    assert f"wxpush serve: {server.url} (/healthz answers while it runs" in logs
    assert f"  {server.url}/wechat/{APPID}  the pushes of {APPID}; in its console: " \
           f"https://<your host>/wechat/{APPID}" in logs
    assert f"  try it: wxpush push {server.url}/wechat/{APPID} --config {server.config} " \
           "--text 你好" in logs


def test_two_servers_on_one_host_leave_the_home_directory_alone(servers, emulator, tmp_path):
    """gunicorn 27 would open its control socket in ~/.gunicorn, one path for every server."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": ""}
    for name in ("one", "two"):
        server = ServerProcess(tmp_path / name, store=f"sqlite:///{tmp_path}/{name}.db",
                               api_base=emulator.url, env=env)
        servers.append(server.start())
    assert list(home.iterdir()) == []
    for server in servers:
        assert "control" not in server.logs().lower()



def test_a_port_already_taken_is_one_line_and_nothing_started(tmp_path):
    config = tmp_path / "wxpush.toml"
    config.write_text(f'[server]\nstore = "sqlite:///{tmp_path}/wxpush.db"\n\n[[apps]]\n'
                      'appid = "wx1"\ntoken = "t"\nmode = "plaintext"\n', encoding="utf-8")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        bind = "127.0.0.1:%d" % taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "webhook.cli", "serve", "--config", str(config), "--bind", bind],
            cwd=ROOT, env={**os.environ, "WXPUSH_LOG_LEVEL": "info"}, capture_output=True,
            text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == f"wxpush serve: cannot listen on {bind}: Address already in use"
    assert list(tmp_path.iterdir()) == [config]     # no store, no journal: no process ran
