"""/readyz and /metrics of one app through falcon.testing, on a real SQLite store; the beat
file and the run directory that carry them between ``wxpush serve``'s processes."""

from __future__ import annotations

from dataclasses import replace

import json
import os
import stat
from pathlib import Path

import falcon.testing
import pytest
from prometheus_client.parser import text_string_to_metric_families

from webhook.delivery.heartbeat import BeatFile, Heartbeat
from webhook.errors import StoreError
from webhook.server.exposition import QueueCollector, exposition, totals
from webhook.server.readiness import Check, Readiness, ReadyResource, delivery_by_file
from webhook.server.rundir import RunDir
from webhook.store import Backlog, InboxEntry, NewReply
from webhook.store.sqlite import SqliteStore
from webhook.testing import FakeClock

from test_app import APPID, build, emulator, post  # noqa: F401  (emulator: the fixture)


def entry(key: str) -> InboxEntry:
    return InboxEntry(key=key, appid="wx1", format="xml", payload="<xml/>", answer="success",
                      received_at=0.0)


class Unreachable(SqliteStore):
    def backlog(self) -> Backlog:
        raise StoreError("sqlite store: disk I/O error")


def ready(readiness: Readiness) -> tuple[int, dict]:
    app = falcon.App()
    app.add_route("/readyz", ReadyResource(readiness))
    result = falcon.testing.TestClient(app).simulate_get("/readyz")
    return result.status_code, result.json


def test_an_app_answers_its_checks_and_no_secret(tmp_path, emulator):
    """Built without a delivery check (not under ``wxpush serve``): the store, rules, backlog
    and dead letters are asked, and nothing in the answer is a secret."""
    _, client, _ = build(tmp_path, emulator)
    answer = client.simulate_get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json["failed"] == [] and "delivery" not in answer.json["checks"]
    assert "secret" not in answer.text.lower() and "token" not in answer.text.lower()


def test_each_check_fails_alone_and_says_why(tmp_path, clock):
    store = SqliteStore(str(tmp_path / "w.db"), clock=clock)
    beats = BeatFile(str(tmp_path / "beat"), clock=clock)
    readiness = Readiness(store=store, rules=None, delivery=delivery_by_file(beats, 60),
                          backlog_age=300, dead_letters=2, allow_volatile=False, clock=clock,
                          monotonic=clock, cache=1.0)
    status, body = ready(readiness)
    assert (status, body["failed"]) == (503, ["delivery"])
    assert body["checks"]["delivery"]["detail"] == "delivery process: no progress yet"
    beats.note(4321)
    clock.advance(0.5)
    assert ready(readiness)[0] == 503                    # the answer is kept for a second
    clock.advance(1.5)
    assert ready(readiness) == (200, {"ready": True, "failed": [], "checks": {
        "store": {"ok": True, "detail": "store answers"},
        "rules": {"ok": True, "detail": "no rules: pushes are acknowledged only"},
        "delivery": {"ok": True, "detail": "delivery pid 4321: last progress 2 s ago"},
        "backlog": {"ok": True, "detail": "0 pushes and 0 replies waiting, the oldest for 0 s"},
        "dead_letters": {"ok": True, "detail": "0 pushes and 0 replies set aside (wxpush "
                                               "inbox/outbox list --state dead)"}}})
    store.inbox_record(replace(entry("wx1:late"), received_at=clock()), ttl=600)
    clock.advance(301)
    beats.note(4321)
    status, body = ready(readiness)
    assert (status, body["failed"]) == (503, ["backlog"])
    assert body["checks"]["backlog"]["detail"] == ("1 pushes and 0 replies waiting, the oldest "
                                                   "for 301 s (over ready_backlog_age 300 s)")
    clock.advance(31)                                    # silent for more than half of 60 s
    assert ready(readiness)[1]["failed"] == ["delivery", "backlog"]


def test_one_silent_delivery_process_of_two_is_not_ready_until_it_is_gone(tmp_path, clock):
    beats = BeatFile(str(tmp_path / "beat"), clock=clock)
    check = delivery_by_file(beats, 60)
    beats.note(11)
    beats.note(22)
    for _ in range(40):                                  # 11 goes round, 22 is stuck
        clock.advance(1.0)
        beats.note(11)
    assert check() == Check("delivery", False, "delivery pid 22: last progress 40 s ago "
                                               "(over 30 s: half of stall_timeout)")
    beats.forget(22)                                     # killed by its supervisor
    assert check() == Check("delivery", True, "delivery pid 11: last progress 0 s ago")


def test_dead_letters_at_the_limit_are_not_ready(tmp_path, clock):
    store = SqliteStore(str(tmp_path / "w.db"), clock=clock)
    readiness = Readiness(store=store, rules=None, delivery=None, backlog_age=0,
                          dead_letters=2, allow_volatile=False, clock=clock, cache=0)
    for i in range(2):
        store.inbox_record(entry(f"wx1:{i}"), ttl=600)
        store.inbox_take(owner="h", lease=10, limit=1, max_attempts=5)
        store.inbox_dead(f"wx1:{i}", owner="h", error="ValueError")
        status, body = ready(readiness)
    assert (status, body["failed"]) == (503, ["dead_letters"])
    assert body["checks"]["dead_letters"]["detail"].startswith("2 pushes and 0 replies")


def test_a_store_that_does_not_answer_is_not_ready(tmp_path, clock):
    readiness = Readiness(store=Unreachable(str(tmp_path / "w.db")), rules=None, delivery=None,
                          backlog_age=300, dead_letters=0, allow_volatile=False, cache=0)
    assert ready(readiness) == (503, {"ready": False, "failed": ["store"], "checks": {
        "store": {"ok": False, "detail": "store unavailable"},
        "rules": {"ok": True, "detail": "no rules: pushes are acknowledged only"}}})


def test_a_redis_that_keeps_nothing_is_not_ready_unless_allowed(redis_server, clock):
    from webhook.store.redis import RedisStore
    store = RedisStore(redis_server.client(), prefix="readyz:")   # the tests' Redis: no AOF
    for allowed in (False, True):
        readiness = Readiness(store=store, rules=None, delivery=None, backlog_age=0,
                              dead_letters=0, allow_volatile=allowed, cache=0)
        status, body = ready(readiness)
        assert (status, body["checks"]["store"]["ok"]) == ((200, True) if allowed
                                                           else (503, False))
        assert "keeps nothing across a restart" in body["checks"]["store"]["detail"]


def test_metrics_count_pushes_and_rejections_and_read_the_queues(tmp_path, emulator):
    app, client, builder = build(tmp_path, emulator)
    before = totals()
    push = builder.text("你好", openid="o-metrics")
    assert post(client, push).text == "success"
    forged = client.simulate_post(f"/wechat/{APPID}", body=push.body,
                                  params={**push.query, "msg_signature": "0" * 40})
    assert forged.status_code == 403
    text = client.simulate_get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    after = totals()
    assert after["wxpush_pushes_total"] - before.get("wxpush_pushes_total", 0) == 2
    assert after["wxpush_rejections_total"] - before.get("wxpush_rejections_total", 0) == 1
    assert samples[("wxpush_queue_length", (("queue", "journal"),))] == 1   # not ingested
    assert samples[("wxpush_queue_length", (("queue", "outbox"),))] == 0
    assert samples[("wxpush_store_up", ())] == 1
    assert "o-metrics" not in text and "你好" not in text


def test_metrics_can_be_turned_off(tmp_path, emulator):
    _, client, _ = build(tmp_path, emulator, metrics="off")
    assert client.simulate_get("/metrics").status_code == 404


def test_queue_gauges_age_from_the_oldest_arrival(tmp_path, clock):
    store = SqliteStore(str(tmp_path / "w.db"), clock=clock)
    store.inbox_record(entry("wx1:1"), ttl=600)
    store.inbox_take(owner="h", lease=10, limit=1, max_attempts=5)
    store.inbox_finish("wx1:1", [NewReply("wx1", "o1", "{}")], owner="h")
    clock.advance(42)
    text = exposition(QueueCollector(store.backlog, clock)).decode()
    assert 'wxpush_queue_oldest_age_seconds{queue="outbox"} 42.0' in text
    assert 'wxpush_queue_length{queue="outbox"} 1.0' in text
    down = exposition(QueueCollector(Unreachable(str(tmp_path / "x.db")).backlog, clock))
    assert b"wxpush_store_up 0.0" in down and b"wxpush_queue_length" not in down


def test_a_heartbeat_without_a_supervisor_notes_its_last_sign():
    clock = FakeClock(100.0)
    heartbeat = Heartbeat(None, every=1.0, clock=clock)
    heartbeat.watch(["a", "b"])
    heartbeat.beat("a")
    assert heartbeat.last is None              # b has not gone round yet
    heartbeat.beat("b")
    assert heartbeat.last == 100.0


def test_the_run_directory_is_private_and_gone_at_exit(tmp_path):
    stale = tmp_path / "mine"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"old")
    with RunDir(metrics=True, env={"PROMETHEUS_MULTIPROC_DIR": str(stale)}) as run:
        assert stat.S_IMODE(os.stat(run.path).st_mode) == 0o700
        assert run.env == {"WXPUSH_RUN_DIR": run.path, "PROMETHEUS_MULTIPROC_DIR": str(stale)}
        assert list(stale.iterdir()) == []       # an earlier run's counts are not this one's
        run.beats.note(77)
        beat = json.loads(Path(run.path, "delivery.beat").read_text())
        assert list(beat) == ["77"]
    assert not os.path.exists(run.path) and stale.is_dir()
    with RunDir(metrics=False, env={}) as run:
        assert run.env == {"WXPUSH_RUN_DIR": run.path}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)
