"""The SQLite store's journal: appended on the request path, taken into the inbox once, by
the key each line carries."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from webhook.store.base import InboxEntry
from webhook.store.journal import READ_BYTES, READER_LOCK, SUFFIX, Journal, _encode
from webhook.store.sqlite import SqliteStore
from webhook.testing.clock import FakeClock


def entry(key: str, answer: str = "success", payload: str | None = None,
          received_at: float = 1.5) -> InboxEntry:
    return InboxEntry(key=key, appid="wx1", format="xml", payload=payload or f"<xml>{key}</xml>",
                      answer=answer, received_at=received_at)


def take(store: SqliteStore) -> list[str]:
    return [e.key for e in store.inbox_take(owner="w1", lease=30, limit=100, max_attempts=5)]


def keys_read(journal: Journal) -> list[str]:
    """Keys of the entries one read of ``journal`` returns, the read marked done."""
    chunks = journal.read()
    journal.done(chunks)
    return [e.key for c in chunks for e, _ in c.entries]


def journals(tmp_path: Path, db: str = "w.db") -> list[str]:
    """The journal files (not the reader lock) of store ``db``, or in directory ``db``."""
    directory = tmp_path / (db if db == "j" else f"{db}-inbox")
    return sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))


def test_recorded_pushes_reach_the_inbox_once_by_key(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    for key in ("wx1:a", "wx1:b", "wx1:a"):   # the retry of a, before a was taken
        store.inbox_record(entry(key), ttl=600)
    assert store.inbox_stats()["pending"] == 3   # lines in the journal, retries among them
    assert take(store) == ["wx1:a", "wx1:b"]
    assert store.inbox_stats()["pending"] == 2
    assert take(store) == []
    store.inbox_finish("wx1:a", [], owner="w1")
    store.inbox_record(entry("wx1:a"), ttl=600)   # a retry after a was handled: not appended
    assert store.inbox_stats()["pending"] == 1 and take(store) == []
    store.close()


def test_the_backlog_counts_logged_pushes_and_their_oldest(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    assert (store.backlog().journal, store.backlog().journal_oldest) == (0, None)
    for key, received in (("wx1:a", 20.5), ("wx1:b", 21.0)):
        store.inbox_record(entry(key, received_at=received), ttl=600)
    assert (store.backlog().journal, store.backlog().journal_oldest) == (2, 20.5)
    take(store)
    backlog = store.backlog()
    assert (backlog.journal, backlog.journal_oldest, backlog.inbox) == (0, None, 2)
    store.close()


def test_an_entry_survives_the_journal_whole(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    recorded = InboxEntry(key="wx1:evt:o\t1\n:\\0", appid="wx1", format="json",
                          payload='{"Content": "你好\\n\\\\n\t\\\\t\\"quoted\\""}\n',
                          answer="<xml>\n\t\\n</xml>", received_at=1714112445.25)
    store.inbox_record(recorded, ttl=600)
    [taken] = store.inbox_take(owner="w1", lease=30, limit=10, max_attempts=5)
    assert taken == InboxEntry(key=recorded.key, appid="wx1", format="json",
                               payload=recorded.payload, answer=recorded.answer,
                               received_at=1714112445.25, attempts=1)
    store.close()


def test_a_message_typed_with_line_breaks_is_taken_whole(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    payload = "<xml><Content><![CDATA[第一行\r\n第二行\r第三行\x0b\x0c\x1c]]></Content></xml>"
    store.inbox_record(entry("wx1:crlf", payload=payload), ttl=600)
    store.inbox_record(entry("wx1:after"), ttl=600)
    taken = store.inbox_take(owner="w1", lease=30, limit=10, max_attempts=5)
    assert [(e.key, e.payload) for e in taken] == [("wx1:crlf", payload),
                                                   ("wx1:after", "<xml>wx1:after</xml>")]
    store.close()


def test_a_receive_time_keeps_its_microseconds(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    received = 1764651723.1234567   # as time.time() gives it
    store.inbox_record(InboxEntry(key="wx1:t", appid="wx1", format="xml", payload="<xml/>",
                                  answer="success", received_at=received), ttl=600)
    [taken] = store.inbox_take(owner="w1", lease=30, limit=10, max_attempts=5)
    assert abs(taken.received_at - received) < 1e-6
    store.close()


def test_a_line_that_cannot_be_read_is_skipped_with_a_log_line(tmp_path, caplog) -> None:
    """Not a line this journal writes (a payload that is not UTF-8): it does not vanish unseen,
    and the lines around it are taken."""
    store = SqliteStore(str(tmp_path / "w.db"))
    good, bad = _encode(entry("wx1:a"), 600), _encode(entry("wx1:x"), 600)
    bad = bad.replace(b"<xml>wx1:x", b"<xml>\xff\xfe")
    (tmp_path / "w.db-inbox" / f"1-gone{SUFFIX}").write_bytes(
        good + bad + _encode(entry("wx1:b"), 600))   # the file of a writer that is gone
    with caplog.at_level(logging.WARNING, logger="webhook.store"):
        assert take(store) == ["wx1:a", "wx1:b"]
    [line] = [r.getMessage() for r in caplog.records]
    assert line == (f"journal line unreadable, skipped file=1-gone{SUFFIX} "
                    f"offset={len(good)} bytes={len(bad) - 1}")
    assert journals(tmp_path) == []
    store.close()


def test_a_dead_writers_journal_is_taken_over_and_deleted(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    pid = os.fork()
    if pid == 0:   # a request worker that records two pushes and dies before they are taken
        worker = SqliteStore(str(tmp_path / "w.db"))
        worker.inbox_record(entry("wx1:c1"), ttl=600)
        worker.inbox_record(entry("wx1:c2"), ttl=600)
        os._exit(0)
    os.waitpid(pid, 0)
    assert len(journals(tmp_path)) == 1
    assert take(store) == ["wx1:c1", "wx1:c2"]
    assert journals(tmp_path) == []
    store.close()


def test_a_live_writers_journal_is_read_while_it_writes(tmp_path) -> None:
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # a request worker: records, records again when told, lives on until told
        try:
            worker = SqliteStore(str(tmp_path / "w.db"))
            for key in ("wx1:live1", "wx1:live2"):
                worker.inbox_record(entry(key), ttl=600)
                os.write(ready_w, b"x")
                os.read(go_r, 1)
        finally:
            os._exit(0)
    try:
        os.read(ready_r, 1)
        reader = SqliteStore(str(tmp_path / "w.db"))
        assert take(reader) == ["wx1:live1"]
        os.write(go_w, b"x")
        os.read(ready_r, 1)
        assert take(reader) == ["wx1:live2"]
        assert len(journals(tmp_path)) == 1          # still its writer's
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
    reader.close()
    later = SqliteStore(str(tmp_path / "w.db"))      # the next reader
    assert take(later) == []                         # nothing is read twice
    assert journals(tmp_path) == []                  # the dead writer's file is deleted
    later.close()
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)


def test_one_process_reads_at_a_time(tmp_path) -> None:
    first, second = SqliteStore(str(tmp_path / "w.db")), SqliteStore(str(tmp_path / "w.db"))
    first.inbox_record(entry("wx1:1"), ttl=600)
    assert take(first) == ["wx1:1"]
    second.inbox_record(entry("wx1:2"), ttl=600)
    assert take(second) == []                        # first holds the reader lock
    assert take(first) == ["wx1:2"]                  # and reads what second wrote
    second.inbox_record(entry("wx1:3"), ttl=600)
    first.close()
    assert take(second) == ["wx1:3"]                 # the lock is free: second reads on
    second.close()


def test_a_restarted_reader_resumes_where_the_last_commit_left(tmp_path) -> None:
    first = SqliteStore(str(tmp_path / "w.db"))
    first.inbox_record(entry("wx1:1"), ttl=600)
    assert take(first) == ["wx1:1"]
    first.inbox_record(entry("wx1:2"), ttl=600)
    first.close()                     # as if the process died: its file is an orphan now
    second = SqliteStore(str(tmp_path / "w.db"))
    assert take(second) == ["wx1:2"]  # wx1:1 is not read twice
    assert journals(tmp_path) == []
    second.close()


def test_a_writer_moves_to_a_new_file_and_the_old_one_is_read_to_the_end(tmp_path) -> None:
    offsets: dict[str, int] = {}
    clock = [0.0]
    journal = Journal(str(tmp_path / "j"), offset=lambda name: offsets.get(name, 0),
                      monotonic=lambda: clock[0], max_bytes=100)
    keys = [f"wx1:{i}" for i in range(6)]
    for key in keys:
        journal.append(entry(key), 600)
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
    journal.append(entry("wx1:ok"), 600)
    path = tmp_path / "j" / journals(tmp_path, "j")[0]
    line = _encode(entry("wx1:late"), 600)
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
        journal.append(entry("wx1:ok"), 600)
        path = tmp_path / "j" / journals(tmp_path, "j")[0]
        fd = os.open(path, os.O_WRONLY)
        line = _encode(entry("wx1:torn"), 600)
        os.pwrite(fd, line[:8] + b"\0" + line[9:], written_end(path))
        os._exit(0)
    os.waitpid(pid, 0)
    reader = Journal(str(tmp_path / "j"), offset=lambda name: 0)
    assert keys_read(reader) == ["wx1:ok"]
    assert journals(tmp_path, "j") == []
    reader.close()


def test_a_push_no_file_can_take_is_refused_and_the_next_one_is_kept(tmp_path) -> None:
    directory = tmp_path / "j"
    journal = Journal(str(directory), offset=lambda name: 0, max_bytes=60)
    journal.append(entry("wx1:1"), 600)        # the first file has no room for another
    directory.rename(tmp_path / "away")          # no new file can be made
    with pytest.raises(OSError):
        journal.append(entry("wx1:lost"), 600)
    (tmp_path / "away").rename(directory)
    journal.append(entry("wx1:2"), 600)
    assert len(journals(tmp_path, "j")) == 2
    assert sorted(keys_read(journal)) == ["wx1:1", "wx1:2"]
    assert [n for n in os.listdir(directory) if n.endswith(".new")] == []
    journal.close()


def test_a_line_longer_than_one_read_is_read_whole(tmp_path) -> None:
    journal = Journal(str(tmp_path / "j"), offset=lambda name: 0)
    big = "wx1:" + "x" * READ_BYTES
    journal.append(entry(big), 600)
    journal.append(entry("wx1:small"), 600)
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


def test_a_push_kept_in_the_journal_past_its_ttl_is_still_taken(tmp_path) -> None:
    """The delivery process was down longer than the key's ttl: the push was answered, so it
    is handled, its key kept from when it reached the inbox."""
    clock = FakeClock()
    store = SqliteStore(str(tmp_path / "w.db"), clock=clock)
    assert store.inbox_record(entry("wx1:late"), ttl=60) is None
    clock.advance(3600)
    assert take(store) == ["wx1:late"]
    assert store.inbox_record(entry("wx1:late", answer="retry"), ttl=60) == "success"
    store.close()
