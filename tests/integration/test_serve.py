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

