"""Shared fixtures: a fake clock, a real redis-server for the session, a store per backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
import shutil
import socket
import subprocess
import time
import uuid

import pytest
import redis

from webhook.store.base import Store
from webhook.store.redis import RedisStore
from webhook.store.sqlite import SqliteStore
from webhook.testing.clock import FakeClock

STORE_BACKENDS = ["sqlite", "redis"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, decode_responses=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_redis(binary: str, workdir: str) -> tuple[subprocess.Popen[bytes], RedisServer]:
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--logfile", ""],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer("127.0.0.1", port, proc.pid)
    client = server.client()
    deadline = time.monotonic() + 10
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                client.ping()
                return proc, server
            except redis.ConnectionError:
                time.sleep(0.02)
    finally:
        client.close()
    proc.kill()
    proc.wait()
    raise RuntimeError(f"redis-server did not start on port {port}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for the whole session; stopped by pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server); the store "
                    "and integration tests need a real one", pytrace=False)
    workdir = str(tmp_path_factory.mktemp("redis"))
    for attempt in range(3):   # the free port may be taken between probe and bind
        try:
            proc, server = _start_redis(binary, workdir)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    yield server
    proc.terminate()
    proc.wait(timeout=10)


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path) -> Iterator[Store]:
    """A fresh, empty store on the fake clock: a tmp SQLite file, or a unique Redis prefix."""
    if request.param == "sqlite":
        sqlite_store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
        yield sqlite_store
        sqlite_store.close()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"test:{uuid.uuid4().hex}:"
    redis_store = RedisStore(server.client(), prefix=prefix, clock=clock)
    yield redis_store
    _delete_prefix(redis_store.client, prefix)
    redis_store.close()
