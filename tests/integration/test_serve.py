"""``wxpush serve`` on a host shared with other servers: it keeps to its own files, and a
port already taken is one line and nothing started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from harness import ROOT, ServerProcess

pytestmark = pytest.mark.slow


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
