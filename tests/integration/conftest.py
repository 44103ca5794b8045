"""Integration fixtures: the WeChat emulator on loopback and real ``wxpush serve`` processes."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from harness import NGINX, EmulatorServer, NginxProcess, ServerProcess


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store for a server: a SQLite file, or a Redis database emptied first."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/wxpush.db"
    redis_server = request.getfixturevalue("redis_server")
    db = random.randrange(1, 16)
    redis.Redis(host="127.0.0.1", port=redis_server.port, db=db).flushdb()
    return f"redis://127.0.0.1:{redis_server.port}/{db}"


@pytest.fixture
def servers(tmp_path) -> Iterator[list[ServerProcess]]:
    """A list to put started servers in; every one is stopped at the end."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[int], NginxProcess]]:
    """Starts Debian's nginx with deploy/nginx.conf in front of a port; stopped by pid."""
    if not os.access(NGINX, os.X_OK):
        pytest.fail(f"nginx is not installed ({NGINX}; apt-get install nginx); the proxy tests "
                    "run the shipped deploy/nginx.conf in a real one", pytrace=False)
    started: list[NginxProcess] = []

    def start(upstream: int) -> NginxProcess:
        proxy = NginxProcess(tmp_path / f"nginx{len(started)}", upstream)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()

