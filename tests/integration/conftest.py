"""Integration fixtures: the WeChat emulator on loopback and real ``wxpush serve`` processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import EmulatorServer, ServerProcess


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer()
    yield server
    server.stop()


@pytest.fixture
def servers(tmp_path) -> Iterator[list[ServerProcess]]:
    """A list to put started servers in; every one is stopped at the end."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()

