"""What an operator sees of a real ``wxpush serve --workers 2``: /metrics whose counts add up
across the request workers and the delivery process, /readyz that follows the delivery
process and the dead letters, and log lines (text or JSON) that explain each push and send."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from webhook.push.messages import hashed
from webhook.store.sqlite import SqliteStore
from webhook.testing import PushBuilder

from harness import AES_KEY, APPID, ROOT, TOKEN, ServerProcess, free_port, wait_for

pytestmark = pytest.mark.slow
GH = "gh_0123456789ab"
RULES = '[[rule]]\nname = "hours"\nkeywords = ["几点"]\nreply.text = "9:00-21:00"\n'


def start(servers, emulator, tmp_path, store_url, server: str = "") -> ServerProcess:
    proc = ServerProcess(tmp_path / f"server{len(servers)}", store=store_url,
                         api_base=emulator.url, rules=RULES, server=server, workers=2)
    servers.append(proc)
    return proc.start()


def push(emulator, openid: str, msg_id: int, *, window: bool = True):
    fields = {"ToUserName": GH, "FromUserName": openid, "CreateTime": int(time.time()),
              "MsgType": "text", "Content": "请问几点开门", "MsgId": msg_id}
    if window:   # WeChat saw the customer write: the send window is open at the emulator
        # (else WeChat knows no such customer: 40003)
        emulator.emulator.notify_push(APPID, fields)
    return PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY).build(fields)


def post(server: ServerProcess, built, *, query: dict | None = None) -> requests.Response:
    with requests.Session() as session:   # a connection each: the workers share them out
        return session.post(f"{server.url}/wechat/{APPID}", params=query or built.query,
                            data=built.body, timeout=10)


def scrape(server: ServerProcess) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


def test_counts_add_up_across_workers_and_the_delivery_process(servers, emulator, tmp_path,
                                                               store_url):
    server = start(servers, emulator, tmp_path, store_url)
    pushes = [push(emulator, f"user-{i}", 5_000 + i) for i in range(24)]
    retries, closed = pushes[:6], push(emulator, "user-closed", 9_999, window=False)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda p: post(server, p).text, [*pushes, closed]))
        assert answers == ["success"] * 25
        assert wait_for(lambda: len(emulator.emulator.sent(APPID)) == 24, timeout=60)
        assert list(pool.map(lambda p: post(server, p).text, retries)) == ["success"] * 6
    forged = {**pushes[0].query, "msg_signature": "0" * 40}
    rejected = [post(server, pushes[0], query=forged).status_code for _ in range(3)]
    assert rejected == [403] * 3

    def settled():
        samples = scrape(server)
        return samples if value(samples, "wxpush_duplicates_dropped_total") == 6 \
            and value(samples, "wxpush_dead_letters_total") == 1 else None

    samples = wait_for(settled, timeout=30)
    assert samples, scrape(server)
    for other in range(3):   # whichever worker answers, the same sums
        assert {k: v for k, v in scrape(server).items() if k[0].endswith("_total")} == \
            {k: v for k, v in samples.items() if k[0].endswith("_total")}, other
    accepted = value(samples, "wxpush_pushes_total", app=APPID, msgtype="text",
                     outcome="accepted")
    duplicate = value(samples, "wxpush_pushes_total", outcome="duplicate")
    # The retries came once the first deliveries were handled: known on the request path.
    assert (accepted, duplicate) == (25, 6)
    assert value(samples, "wxpush_pushes_total", outcome="rejected") == 3
    assert value(samples, "wxpush_rejections_total", reason="decrypt_error") \
        + value(samples, "wxpush_rejections_total", reason="bad_signature") == 3
    assert value(samples, "wxpush_answer_seconds_count", app=APPID) == 31
    assert value(samples, "wxpush_answer_seconds_bucket", app=APPID, le="5.0") == 31
    assert value(samples, "wxpush_handler_seconds_count", rule="hours") == 25
    assert value(samples, "wxpush_sends_total", app=APPID, errcode="0") == 24
    assert value(samples, "wxpush_sends_total", app=APPID, errcode="40003") == 1
    assert value(samples, "wxpush_dead_letters_total", app=APPID, reason="40003") == 1
    assert value(samples, "wxpush_replies_sent_total", app=APPID) == 24
    assert value(samples, "wxpush_token_refreshes_total", app=APPID, reason="missing",
                 outcome="ok") == 1
    assert value(samples, "wxpush_store_up") == 1
    assert value(samples, "wxpush_queue_length", queue="outbox") == 0
    assert value(samples, "wxpush_queue_dead", queue="outbox") == 1

    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True and body["failed"] == []
    assert set(body["checks"]) == {"store", "rules", "delivery", "backlog", "dead_letters"}
    assert "4 rules loaded" in body["checks"]["rules"]["detail"]   # and 3 built-ins
    assert "0 pushes and 1 replies set aside" in body["checks"]["dead_letters"]["detail"]

    logs = server.logs()
    assert f"app appid={APPID} format=xml mode=safe path=/wechat/{APPID}" in logs
    assert f"user={hashed('user-3')} key=msg:5003 type=text rule=hours outcome=handled" in logs
    dead = [line for line in logs.splitlines() if "reply dead" in line]
    assert len(dead) == 1 and "[WARNING]" in dead[0]
    assert "errcode=40003 errmsg=invalid openid" in dead[0]   # a customer WeChat never saw
    assert "请问几点开门" not in logs       # no message content without log_content


def test_readiness_follows_the_delivery_process_and_the_dead_letters(servers, emulator,
                                                                     tmp_path):
    server = start(servers, emulator, tmp_path, f"sqlite:///{tmp_path}/wxpush.db",
                   server="stall_timeout = 20\nlease = 2\nready_dead_letters = 2\n")
    ready = lambda: requests.get(f"{server.url}/readyz", timeout=10)   # noqa: E731

    def unready() -> dict | None:
        answer = ready()
        return answer.json() if answer.status_code == 503 else None

    assert wait_for(lambda: ready().status_code == 200, timeout=20), ready().text
    delivery = server.delivery_pids()[0]
    os.kill(delivery, signal.SIGSTOP)      # stuck: no progress, while the other goes on
    try:
        # (A worker may still hold its answer from before the first sign, for a second.)
        stuck = wait_for(lambda: (body := unready()) and "half of stall_timeout" in
                         body["checks"]["delivery"]["detail"] and body, timeout=15)
        assert stuck and stuck["failed"] == ["delivery"], ready().text
        assert "(over 10 s: half of stall_timeout)" in stuck["checks"]["delivery"]["detail"]
    finally:
        os.kill(delivery, signal.SIGCONT)  # before its supervisor replaces it
    assert wait_for(lambda: ready().status_code == 200, timeout=20), ready().text
    assert delivery in server.delivery_pids()
    for i in range(2):                     # two replies set aside: 40003, a customer unknown
        assert post(server, push(emulator, f"closed-{i}", 7_000 + i, window=False)).ok
    failed = wait_for(lambda: (body := unready()) and "dead_letters" in body["failed"]
                      and body, timeout=30)
    assert failed and failed["failed"] == ["dead_letters"], ready().text


def test_json_logs_and_metrics_on_a_port_of_their_own(servers, emulator, tmp_path):
    port = free_port()
    server = start(servers, emulator, tmp_path, f"sqlite:///{tmp_path}/wxpush.db",
                   server=f'log_format = "json"\nlog_content = true\nmetrics = "port:{port}"\n')
    assert post(server, push(emulator, "user-json", 1)).text == "success"
    assert wait_for(lambda: emulator.emulator.sent(APPID), timeout=30)
    assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 404
    own = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'wxpush_pushes_total{app="%s",msgtype="text",outcome="accepted"} 1.0' % APPID in own
    lines = wait_for(lambda: [json.loads(line) for line in server.logs().splitlines()
                              if "reply sent" in line] and server.logs().splitlines())
    records = [json.loads(line) for line in lines]      # every line is one JSON object
    loggers = {record["logger"] for record in records}
    assert {"gunicorn.error", "webhook.server", "webhook.delivery.handling",
            "webhook.delivery.sender"} <= loggers
    handled = [r["message"] for r in records if r["message"].startswith("push handled")]
    assert handled and "content=请问几点开门" in handled[0]     # log_content = true


def test_a_backup_of_a_running_server_restores_its_pushes_and_replies(servers, emulator,
                                                                      tmp_path):
    server = start(servers, emulator, tmp_path, f"sqlite:///{tmp_path}/wxpush.db")
    for i in range(5):
        assert post(server, push(emulator, f"user-b{i}", 8_000 + i)).text == "success"
    assert wait_for(lambda: len(emulator.emulator.sent(APPID)) == 5, timeout=30)
    done = subprocess.run([sys.executable, "-m", "webhook.cli", "backup", str(tmp_path / "bk"),
                           "--config", str(server.config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    restored = tmp_path / "restored"
    shutil.copytree(tmp_path / "bk", restored)           # as an operator restores it
    store = SqliteStore(str(restored / "wxpush.db"))
    try:
        rows = store.outbox_list(limit=100)
        assert sorted(row.openid for row in rows) == [f"user-b{i}" for i in range(5)]
        assert {row.state for row in rows} == {"sent"}
    finally:
        store.close()
