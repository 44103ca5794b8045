"""The SQLite store's intake journal: appended on the request path, ingested once, by key."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from webhook.store.base import InboxEntry
from webhook.store.journal import READER_LOCK, SUFFIX, Journal, _encode
from webhook.store.sqlite import SqliteStore


def entry(key: str, answer: str = "success") -> tuple[str, str, bytes, str, float]:
    """A logged push whose payload names its key (see ``key_of``)."""
    return "wx1", "xml", f"<xml>{key}\n</xml>".encode(), answer, 1.5


def key_of(entry: InboxEntry) -> str | None:
    key = entry.payload.removeprefix("<xml>").removesuffix("\n</xml>")
    return None if key == "unreadable" else key


def ingest(store: SqliteStore) -> tuple[list[str], list[tuple[str, str]]]:
    new, seen = store.inbox_ingest(owner="w1", lease=30, ttl=600, key=key_of)
    return [e.key for e in new], [(e.key, e.state) for e in seen]


def keys_read(journal: Journal, limit: int | None = None) -> list[str]:
    """Keys of the entries one read of ``journal`` returns, the read marked done."""
    chunks = journal.read(limit)
    journal.done(chunks)
    return [key_of(e) for c in chunks for e in c.entries]


def journals(tmp_path: Path, db: str = "w.db") -> list[str]:
    """The journal files (not the reader lock) of store ``db``, or in directory ``db``."""
    directory = tmp_path / (db if db == "j" else f"{db}-inbox")
    return sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))


def test_logged_pushes_reach_the_inbox_once_by_key(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    assert store.journaled
    for key in ("wx1:a", "wx1:b", "wx1:a"):
        store.inbox_log(*entry(key))
    assert store.inbox_waiting() == 3
    assert ingest(store) == (["wx1:a", "wx1:b"], [("wx1:a", "pending")])
    assert store.inbox_waiting() == 0
    assert ingest(store) == ([], [])
    store.inbox_finish("wx1:a", [], owner="w1")
    store.inbox_log(*entry("wx1:a"))   # a retry after the first was handled
    assert ingest(store) == ([], [("wx1:a", "done")])
    new = store.inbox_claim(owner="w2", lease=30, limit=10, max_attempts=5)
    assert new == []                  # ingested rows are leased to the ingester
    store.close()


def test_the_backlog_counts_logged_pushes_and_their_oldest(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    assert (store.backlog().journal, store.backlog().journal_oldest) == (0, None)
    for key, received in (("wx1:a", 20.5), ("wx1:b", 21.0)):
        store.inbox_log("wx1", "xml", f"<xml>{key}\n</xml>".encode(), "success", received)
    assert (store.backlog().journal, store.backlog().journal_oldest) == (2, 20.5)
    ingest(store)
    backlog = store.backlog()
    assert (backlog.journal, backlog.journal_oldest, backlog.inbox) == (0, None, 2)
    store.close()


def test_an_entry_survives_the_journal_whole(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    payload = '{"Content": "你好\\n\\\\n\t\\\\t\\"quoted\\""}\n'
    store.inbox_log("wx1", "json", payload.encode(), "<xml>\n\t\\n</xml>", 1714112445.25)
    new, _ = store.inbox_ingest(owner="w1", lease=30, ttl=600, key=lambda e: "wx1:z")
    assert new == [InboxEntry(key="wx1:z", appid="wx1", format="json", payload=payload,
                              answer="<xml>\n\t\\n</xml>", received_at=1714112445.25,
                              attempts=1)]   # as recorded: leased to the ingester
    store.close()


def test_a_message_typed_with_line_breaks_is_ingested_whole(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    payload = "<xml><Content><![CDATA[第一行\r\n第二行\r第三行\x0b\x0c\x1c]]></Content></xml>"
    store.inbox_log("wx1", "xml", payload.encode(), "success", 1.0)
    store.inbox_log(*entry("wx1:after"))
    new, _ = store.inbox_ingest(owner="w1", lease=30, ttl=600,
                                key=lambda e: key_of(e) if e.payload.endswith("\n</xml>")
                                else "wx1:crlf")
    assert [(e.key, e.payload) for e in new] == [("wx1:crlf", payload),
                                                 ("wx1:after", "<xml>wx1:after\n</xml>")]
    store.close()


def test_an_ingest_takes_at_most_its_limit(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    for i in range(7):
        store.inbox_log(*entry(f"wx1:{i}"))
    taken = []
    for expected in (3, 3, 1, 0):
        new, _ = store.inbox_ingest(owner="w1", lease=30, ttl=600, key=key_of, limit=3)
        assert len(new) == expected
        taken += [e.key for e in new]
    assert taken == [f"wx1:{i}" for i in range(7)] and store.inbox_waiting() == 0
    store.close()


def test_a_limited_read_shares_the_limit_between_writers(tmp_path) -> None:
    """A burst from one worker does not hold back another's pushes."""
    writers = [Journal(str(tmp_path / "j"), offset=lambda name: 0) for _ in range(2)]
    for i in range(6):
        writers[0].append(*entry(f"wx1:a{i}"))
    writers[1].append(*entry("wx1:b0"))
    reader = Journal(str(tmp_path / "j"), offset=lambda name: 0)
    reads = [sorted(keys_read(reader, limit=4)) for _ in range(4)]
    assert reads == [["wx1:a0", "wx1:a1", "wx1:b0"], ["wx1:a2", "wx1:a3"],
                     ["wx1:a4", "wx1:a5"], []]
    for journal in (*writers, reader):
        journal.close()


def test_a_receive_time_keeps_its_microseconds(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    received = 1764651723.1234567   # as time.time() gives it
    store.inbox_log("wx1", "xml", b"<xml/>", "success", received)
    new, _ = store.inbox_ingest(owner="w1", lease=30, ttl=600, key=lambda e: "wx1:t")
    assert abs(new[0].received_at - received) < 1e-6
    store.close()


def test_a_push_without_a_key_is_dropped(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    for key in ("wx1:a", "unreadable", "wx1:b"):
        store.inbox_log(*entry(key))
    assert ingest(store) == (["wx1:a", "wx1:b"], [])
    assert ingest(store) == ([], [])
    store.close()


def test_a_line_that_cannot_be_decoded_is_skipped_with_a_log_line(tmp_path, caplog) -> None:
    """Its payload is not UTF-8: no key can be had, but it does not vanish unseen."""
    store = SqliteStore(str(tmp_path / "w.db"))
    store.inbox_log(*entry("wx1:a"))
    store.inbox_log("wx1", "xml", b"<xml>\xff\xfe</xml>", "success", 1.5)
    store.inbox_log(*entry("wx1:b"))
    first, bad = len(_encode(*entry("wx1:a"))), _encode("wx1", "xml", b"<xml>\xff\xfe</xml>",
                                                        "success", 1.5)
    with caplog.at_level(logging.WARNING, logger="webhook.store"):
        assert ingest(store) == (["wx1:a", "wx1:b"], [])
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("journal line unreadable, skipped file=")
    assert line.endswith(f".journal offset={first} bytes={len(bad) - 1}")
    store.close()


def test_a_dead_writers_journal_is_taken_over_and_deleted(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    pid = os.fork()
    if pid == 0:   # a worker that logs two pushes and dies before ingesting them
        store.inbox_log(*entry("wx1:c1"))
        store.inbox_log(*entry("wx1:c2"))
        os._exit(0)
    os.waitpid(pid, 0)
    assert len(journals(tmp_path)) == 1
    assert ingest(store) == (["wx1:c1", "wx1:c2"], [])
    assert journals(tmp_path) == []
    store.close()


def test_a_live_writers_journal_is_read_while_it_writes(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # a request worker: logs, logs again when told, then lives on until told
        try:
            for key in ("wx1:live1", "wx1:live2"):
                store.inbox_log(*entry(key))
                os.write(ready_w, b"x")
                os.read(go_r, 1)
        finally:
            os._exit(0)
    try:
        os.read(ready_r, 1)
        reader = SqliteStore(str(tmp_path / "w.db"))
        assert ingest(reader) == (["wx1:live1"], [])
        os.write(go_w, b"x")
        os.read(ready_r, 1)
        assert ingest(reader) == (["wx1:live2"], [])
        assert len(journals(tmp_path)) == 1          # still its writer's
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
    reader.close()
    later = SqliteStore(str(tmp_path / "w.db"))      # the next reader
    assert ingest(later) == ([], [])                 # nothing is read twice
    assert journals(tmp_path) == []                  # the dead writer's file is deleted
    for s in (store, later):
        s.close()
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)


def test_one_process_reads_at_a_time(tmp_path) -> None:
    first, second = SqliteStore(str(tmp_path / "w.db")), SqliteStore(str(tmp_path / "w.db"))
    first.inbox_log(*entry("wx1:1"))
    assert ingest(first) == (["wx1:1"], [])
    second.inbox_log(*entry("wx1:2"))
    assert ingest(second) == ([], [])                # first holds the reader lock
    assert ingest(first) == (["wx1:2"], [])          # and reads what second wrote
    second.inbox_log(*entry("wx1:3"))
    first.close()
    assert ingest(second) == (["wx1:3"], [])         # the lock is free: second reads on
    second.close()


def test_a_restarted_ingester_resumes_where_the_last_commit_left(tmp_path) -> None:
    first = SqliteStore(str(tmp_path / "w.db"))
    first.inbox_log(*entry("wx1:1"))
    assert ingest(first) == (["wx1:1"], [])
    first.inbox_log(*entry("wx1:2"))
    first.close()                     # as if the process died: its file is an orphan now
    second = SqliteStore(str(tmp_path / "w.db"))
    assert ingest(second) == (["wx1:2"], [])   # wx1:1 is not read twice
    assert journals(tmp_path) == []
    second.close()


def test_a_writer_moves_to_a_new_file_and_the_old_one_is_read_to_the_end(tmp_path) -> None:
    offsets: dict[str, int] = {}
    clock = [0.0]
    journal = Journal(str(tmp_path / "j"), offset=lambda name: offsets.get(name, 0),
                      monotonic=lambda: clock[0], max_bytes=100)
    keys = [f"wx1:{i}" for i in range(6)]
    for key in keys:
        journal.append(*entry(key))
    assert len(journals(tmp_path, "j")) > 1
    read: list[str] = []
    for _ in range(10):
        clock[0] += 5   # each read looks for closed files again
        read += keys_read(journal)
    assert sorted(read) == keys
    assert len(journals(tmp_path, "j")) == 1   # only the file still being written
    journal.close()


def written_end(path: Path) -> int:
    """Where a journal file's written part ends (its first NUL)."""
    data = path.read_bytes()
    return data.index(b"\0") if b"\0" in data else len(data)


def test_a_line_is_read_once_every_byte_of_it_has_landed_in_any_order(tmp_path) -> None:
    journal = Journal(str(tmp_path / "j"), offset=lambda name: 0)
    journal.append(*entry("wx1:ok"))
    path = tmp_path / "j" / journals(tmp_path, "j")[0]
    line = _encode(*entry("wx1:late"))
    at = written_end(path)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, line[10:], at + 10)      # the end of a copy lands before its start
        assert keys_read(journal) == ["wx1:ok"]
        assert keys_read(journal) == []
        os.pwrite(fd, line[:10], at)
    finally:
        os.close(fd)
    assert keys_read(journal) == ["wx1:late"]
    journal.close()


def test_a_line_torn_by_its_writers_death_is_dropped_with_the_file(tmp_path) -> None:
    pid = os.fork()
    if pid == 0:   # a worker killed in the middle of copying its second push
        journal = Journal(str(tmp_path / "j"), offset=lambda name: 0)
        journal.append(*entry("wx1:ok"))
        path = tmp_path / "j" / journals(tmp_path, "j")[0]
        fd = os.open(path, os.O_WRONLY)
        line = _encode(*entry("wx1:torn"))
        os.pwrite(fd, line[:8] + b"\0" + line[9:], written_end(path))
        os._exit(0)
    os.waitpid(pid, 0)
    reader = Journal(str(tmp_path / "j"), offset=lambda name: 0)
    assert keys_read(reader) == ["wx1:ok"]
    assert journals(tmp_path, "j") == []
    reader.close()


def test_a_file_written_by_plain_appends_is_read_to_its_end(tmp_path) -> None:
    """Journals of an earlier release: lines appended with write(), no allocated tail."""
    os.makedirs(tmp_path / "j")
    (tmp_path / "j" / f"1-old{SUFFIX}").write_bytes(
        _encode(*entry("wx1:1")) + _encode(*entry("wx1:2")) + b"1.5\twx1\txm")
    reader = Journal(str(tmp_path / "j"), offset=lambda name: 0)
    assert keys_read(reader) == ["wx1:1", "wx1:2"]
    assert journals(tmp_path, "j") == []
    # One still written that way (by a worker of that release) is followed as it grows.
    live = tmp_path / "j" / f"2-live{SUFFIX}"
    live.write_bytes(_encode(*entry("wx1:3")))
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert keys_read(reader) == ["wx1:3"]
        with open(live, "ab") as file:
            file.write(_encode(*entry("wx1:4")))
        assert keys_read(reader) == ["wx1:4"]
    reader.close()


def test_a_forked_child_writes_its_own_file_and_leaves_the_parents_locked(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    store.inbox_log(*entry("wx1:parent"))
    pid = os.fork()
    if pid == 0:
        store.inbox_log(*entry("wx1:child"))
        os._exit(0)
    os.waitpid(pid, 0)
    assert len(journals(tmp_path)) == 2
    assert sorted(ingest(store)[0]) == ["wx1:child", "wx1:parent"]
    assert len(journals(tmp_path)) == 1          # the child's, read to the end, is gone
    store.inbox_log(*entry("wx1:parent2"))
    assert ingest(store) == (["wx1:parent2"], [])
    assert len(journals(tmp_path)) == 1          # the parent's, still written, is kept
    store.close()


def test_a_child_forked_while_another_thread_appends_can_append(tmp_path) -> None:
    """The journal's lock, held by the parent's appending thread at the fork, is the
    parent's: the child's first append does not wait for it forever."""
    journal = Journal(str(tmp_path / "j"), offset=lambda name: 0)
    journal.append(*entry("wx1:parent"))
    with journal._write_lock:                    # as another thread's append would hold it
        pid = os.fork()
        if pid == 0:
            signal.alarm(5)                      # a deadlocked child dies instead of hanging
            journal.append(*entry("wx1:child"))
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(keys_read(journal)) == ["wx1:child", "wx1:parent"]
    journal.close()


def test_a_push_no_file_can_take_is_refused_and_the_next_one_is_kept(tmp_path) -> None:
    directory = tmp_path / "j"
    journal = Journal(str(directory), offset=lambda name: 0, max_bytes=60)
    journal.append(*entry("wx1:1"))              # the first file has no room for another
    directory.rename(tmp_path / "away")          # no new file can be made
    with pytest.raises(OSError):
        journal.append(*entry("wx1:lost"))
    (tmp_path / "away").rename(directory)
    journal.append(*entry("wx1:2"))
    assert len(journals(tmp_path, "j")) == 2
    assert sorted(keys_read(journal)) == ["wx1:1", "wx1:2"]
    assert [n for n in os.listdir(directory) if n.endswith(".new")] == []
    journal.close()


def test_a_line_longer_than_one_read_is_read_whole(tmp_path) -> None:
    from webhook.store.journal import READ_BYTES

    journal = Journal(str(tmp_path / "j"), offset=lambda name: 0)
    big = "wx1:" + "x" * READ_BYTES
    journal.append(*entry(big))
    journal.append(*entry("wx1:small"))
    read = []
    for _ in range(3):
        read += keys_read(journal)
    assert read == [big, "wx1:small"]
    journal.close()


def test_a_file_its_writer_never_named_is_removed(tmp_path) -> None:
    journal = Journal(str(tmp_path / "j"), offset=lambda name: 0)
    young, old = tmp_path / "j" / f"1-young{SUFFIX}.new", tmp_path / "j" / f"2-old{SUFFIX}.new"
    young.write_bytes(b"")
    old.write_bytes(b"")
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert journal.read() == []
    # The young one may be a writer about to lock it.
    assert sorted(os.listdir(tmp_path / "j")) == [young.name, READER_LOCK]
    journal.close()
