"""``wxpush backup``: a consistent copy of a SQLite store taken while it is written, restored
and read; and the schema version every store keeps, which a newer wxpush's store refuses."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from webhook.errors import StoreError
from webhook.store.backup import backup
from webhook.store.redis import SCHEMA_VERSION as REDIS_SCHEMA, RedisStore
from webhook.store.sqlite import SCHEMA_VERSION, SqliteStore

from test_journal import entry, ingest
from test_store_contract import enqueue, reply

ROOT = Path(__file__).parents[3]


def test_a_backup_taken_while_the_store_is_written_restores_every_row(tmp_path):
    (tmp_path / "live").mkdir()
    store = SqliteStore(str(tmp_path / "live" / "wxpush.db"))
    before = [enqueue(store, reply(f"o{i}", f"m{i}"))[0] for i in range(50)]
    for key in ("wx1:a", "wx1:b"):          # answered, still in the journal
        store.inbox_log(*entry(key))
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            enqueue(store, reply(f"w{n}", f"w{n}"))
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        database, journals = backup(store.path, str(tmp_path / "copy"))
    finally:
        stop.set()
        writer.join()
    assert (database, journals) == (str(tmp_path / "copy" / "wxpush.db"), 1)
    assert stat.S_IMODE(os.stat(tmp_path / "copy").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(database).st_mode) == 0o600
    with sqlite3.connect(database) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store.close()
    restored = SqliteStore(database)
    ids = {row.id for row in restored.outbox_list(limit=10_000)}
    assert set(before) <= ids
    assert restored.inbox_waiting() == 2   # the journal's pushes come back with it
    assert ingest(restored)[0] == ["wx1:a", "wx1:b"]
    restored.close()


def test_backup_refuses_a_destination_that_holds_files(tmp_path):
    store = SqliteStore(str(tmp_path / "wxpush.db"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(StoreError, match="exists and is not an empty directory"):
        backup(store.path, str(tmp_path / "full"))
    store.close()


def test_the_backup_command_names_what_it_copied_and_refuses_redis(tmp_path):
    config = tmp_path / "wxpush.toml"
    apps = '\n[[apps]]\nappid = "wx1"\ntoken = "t"\nmode = "plaintext"\n'
    config.write_text('[server]\nstore = "sqlite:///wxpush.db"\n' + apps, encoding="utf-8")
    SqliteStore(str(tmp_path / "wxpush.db")).close()
    run = [sys.executable, "-m", "webhook.cli", "backup", "--config", str(config)]
    done = subprocess.run([*run, str(tmp_path / "b")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"backup   {tmp_path}/b/wxpush.db (0 journal files")
    config.write_text('[server]\nstore = "redis://127.0.0.1:1/0"\n' + apps, encoding="utf-8")
    refused = subprocess.run([*run, str(tmp_path / "c")], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("wxpush backup: the store is not a SQLite file: back a "
                                     "Redis store up with Redis's own persistence")
    assert len(refused.stderr.splitlines()) == 1


def test_a_sqlite_store_records_its_schema_and_migrates_an_older_one(tmp_path):
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as old:      # as made before versions and errors were kept
        old.execute("CREATE TABLE inbox (key TEXT PRIMARY KEY, appid TEXT NOT NULL, format TEXT "
                    "NOT NULL, payload TEXT NOT NULL, answer TEXT NOT NULL, received_at REAL NOT "
                    "NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, owner TEXT, "
                    "lease_until REAL, expires_at REAL NOT NULL)")
    old.close()
    SqliteStore(path).close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert "error" in {row[1] for row in check.execute("PRAGMA table_info(inbox)")}
    check.close()


def test_a_store_with_a_newer_schema_refuses_to_start_in_one_line(tmp_path, redis_server):
    path = tmp_path / "wxpush.db"
    SqliteStore(str(path)).close()
    with sqlite3.connect(path) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.close()
    with pytest.raises(StoreError, match=f"has schema version {SCHEMA_VERSION + 1}, newer than "
                                         f"this wxpush's {SCHEMA_VERSION}"):
        SqliteStore(str(path))
    config = tmp_path / "wxpush.toml"
    config.write_text('[server]\nstore = "sqlite:///wxpush.db"\n\n[[apps]]\nappid = "wx1"\n'
                      'token = "t"\nmode = "plaintext"\n', encoding="utf-8")
    serve = subprocess.run([sys.executable, "-m", "webhook.cli", "serve", "--config", str(config),
                            "--bind", "127.0.0.1:0"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert serve.returncode == 2
    assert serve.stderr.splitlines() == [
        f"wxpush serve: sqlite store {path} has schema version "
        f"{SCHEMA_VERSION + 1}, newer than this wxpush's {SCHEMA_VERSION}: run the wxpush that "
        "wrote it, or a newer one"]
    client = redis_server.client()
    client.set("schematest:schema", REDIS_SCHEMA + 1)
    try:
        with pytest.raises(StoreError, match=f"has schema version {REDIS_SCHEMA + 1}"):
            RedisStore.from_url(redis_server.url, prefix="schematest:")
        client.delete("schematest:schema")
        RedisStore.from_url(redis_server.url, prefix="schematest:").close()
        assert client.get("schematest:schema") == str(REDIS_SCHEMA)
    finally:
        client.delete("schematest:schema")
        client.close()
