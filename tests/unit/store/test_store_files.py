"""The SQLite store's files (database, -wal, -shm, lock file, journals and their directory) are
its owner's alone, whatever the umask, and wider ones found at start are narrowed."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from webhook.store.base import InboxEntry, NewReply
from webhook.store.sqlite import SqliteStore


def modes(directory: Path) -> dict[str, int]:
    return {str(path.relative_to(directory)): stat.S_IMODE(path.stat().st_mode)
            for path in sorted(directory.rglob("*"))}


def use(store: SqliteStore) -> None:
    """Every kind of write, so that every file the store keeps exists."""
    store.put("token:wx1", "secret-token", ttl=60)
    store.inbox_record(InboxEntry(key="wx1:a", appid="wx1", format="xml", payload="<xml>a</xml>",
                                  answer="success", received_at=1.0), ttl=600)
    store.inbox_take(owner="w", lease=30, limit=10, max_attempts=5)
    store.inbox_finish("wx1:a", [NewReply("wx1", "o1", '{"msgtype":"text"}')], owner="w")


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o277])
def test_every_store_file_is_made_private_whatever_the_umask(tmp_path, umask) -> None:
    previous = os.umask(umask)
    try:
        store = SqliteStore(str(tmp_path / "wxpush.db"))
        use(store)
        found = modes(tmp_path)
    finally:
        os.umask(previous)
    store.close()
    assert {"wxpush.db", "wxpush.db-wal", "wxpush.db-shm", "wxpush.db-wxpush.lock",
            "wxpush.db-inbox", "wxpush.db-inbox/reader.lock"} <= set(found)
    assert any(name.endswith(".journal") for name in found)
    assert found == {name: 0o700 if (tmp_path / name).is_dir() else 0o600 for name in found}


def test_files_found_open_to_others_are_narrowed_with_one_line(tmp_path, caplog) -> None:
    path = str(tmp_path / "wxpush.db")
    first = SqliteStore(path)
    use(first)   # and kept open, so that its -wal and -shm stay
    for name in modes(tmp_path):
        os.chmod(tmp_path / name, 0o755 if (tmp_path / name).is_dir() else 0o644)
    with caplog.at_level(logging.WARNING, logger="webhook.store"):
        second = SqliteStore(path)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "now to their owner alone" in lines[0]
    assert "wxpush.db (0644)" in lines[0] and "wxpush.db-inbox (0755)" in lines[0]
    assert set(modes(tmp_path).values()) == {0o600, 0o700}
    assert second.get("token:wx1") == "secret-token"
    second.close()
    first.close()
