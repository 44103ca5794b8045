"""Delivery keeps its promises through real gunicorn workers, a real store and the emulator:
retries never cause a second handling, crashes lose nothing, every reply ends sent or dead."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from webhook.store import open_store
from webhook.testing import PushBuilder

from harness import AES_KEY, APPID, ROOT, TOKEN, ServerProcess, wait_for

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
PUSHES = int(os.environ.get("WXPUSH_TEST_PUSHES", "2000"))
GH = "gh_0123456789ab"


def start(servers, emulator, tmp_path, store_url, *, server: str = "", **kwargs) -> ServerProcess:
    log = tmp_path / "handlers.log"
    log.touch()
    proc = ServerProcess(tmp_path / f"server{len(servers)}", store=store_url, api_base=emulator.url,
                         server='routers = ["countbot:router"]\n' + server,
                         env={"COUNTBOT_LOG": str(log), "PYTHONPATH": str(HERE)}, **kwargs)
    servers.append(proc)
    return proc.start()


def handler_log(tmp_path) -> Counter:
    lines = (tmp_path / "handlers.log").read_text().split()
    return Counter(zip(lines[0::3], lines[2::3]))


def text_push(emulator, openid: str, msg_id: int, content: str, *, created: int | None = None):
    fields = {"ToUserName": GH, "FromUserName": openid, "CreateTime": created or int(time.time()),
              "MsgType": "text", "Content": content, "MsgId": msg_id}
    emulator.emulator.notify_push(APPID, fields)
    return PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY).build(fields)


def deliver(session: requests.Session, server: ServerProcess, push) -> requests.Response:
    return session.post(f"{server.url}/wechat/{APPID}", params=push.query, data=push.body,
                        timeout=10)


def test_retries_are_handled_once(servers, emulator, tmp_path, store_url):
    server = start(servers, emulator, tmp_path, store_url)
    pushes = [text_push(emulator, f"user-{i}", 7_000_000_000_000_000_000 + i,
                        "slow 0.3" if i % 50 == 0 else f"hello {i}") for i in range(PUSHES)]
    # Every push delivered 4 times; retries interleaved, some while the first is in progress.
    deliveries = [p for p in pushes for _ in range(4)]
    random.Random(7).shuffle(deliveries)
    local = threading.local()

    def post(push):
        local.session = getattr(local, "session", None) or requests.Session()
        response = deliver(local.session, server, push)
        return response.status_code, response.text

    with ThreadPoolExecutor(16) as pool:
        answers = Counter(pool.map(post, deliveries))
    assert answers == {(200, "success"): 4 * PUSHES}
    assert wait_for(lambda: len(emulator.emulator.sent(APPID)) >= PUSHES, timeout=180)
    time.sleep(1.0)
    sent = emulator.emulator.sent(APPID)
    assert len(sent) == PUSHES
    assert len({touser for _, touser, _ in sent}) == PUSHES
    runs = handler_log(tmp_path)
    assert sum(n for (what, _), n in runs.items() if what == "end") == PUSHES
    assert max(runs.values()) == 1


def test_worker_killed_after_the_inbox_commit(servers, emulator, tmp_path, store_url):
    server = start(servers, emulator, tmp_path, store_url, server="lease = 2\n")
    push = text_push(emulator, "user-crash", 42, "slow 2")
    session = requests.Session()
    assert deliver(session, server, push).text == "success"
    assert wait_for(lambda: handler_log(tmp_path)[("start", "42")] == 1, timeout=10)
    # The push is recorded and mid-handling: every process of the server dies.
    for pid in {*server.worker_pids(), *server.delivery_pids()}:
        os.kill(pid, signal.SIGKILL)
    for _ in range(3):                         # WeChat's retries reach the new workers
        response = wait_for(lambda: _try(session, server, push), timeout=20)
        assert (response.status_code, response.text) == (200, "success")
    assert wait_for(lambda: emulator.emulator.sent(APPID), timeout=30)
    time.sleep(3)
    assert [p["text"]["content"] for _, _, p in emulator.emulator.sent(APPID)] == ["echo slow 2"]
    assert handler_log(tmp_path)[("end", "42")] == 1


def _try(session, server, push):
    try:
        return deliver(session, server, push)
    except requests.RequestException:   # the killed workers are still being replaced
        return None


def test_senders_killed_repeatedly_lose_nothing(servers, emulator, tmp_path, store_url):
    emulator.emulator.set_faults(delay_rate=1.0, delay_seconds=0.02)
    server = start(servers, emulator, tmp_path, store_url,
                   server="lease = 2\nsenders = 1\nretry_delay = 0.05\n")
    session = requests.Session()
    for i in range(500):
        assert deliver(session, server, text_push(emulator, f"u{i}", 9000 + i, f"m{i}")).ok
    kills = 0
    for _ in range(5):
        time.sleep(0.5)
        os.kill(wait_for(server.delivery_pids)[0], signal.SIGKILL)
        kills += 1
    store = open_store(store_url)
    assert wait_for(lambda: (s := store.outbox_stats())["pending"] + s["sending"] == 0
                    and s["sent"] + s["dead"] == 500, timeout=180), store.outbox_stats()
    sent = Counter(touser for _, touser, _ in emulator.emulator.sent(APPID))
    assert len(sent) == 500                                  # none lost
    assert sum(sent.values()) - 500 <= kills                 # at most one duplicate per kill


def test_chaos_ends_sent_or_dead(servers, emulator, tmp_path, store_url):
    emulator.emulator.set_faults(errcode_rate=0.3, http502_rate=0.1, delay_rate=0.05,
                                 delay_seconds=0.5)
    server = start(servers, emulator, tmp_path, store_url,
                   server="retry_delay = 0.05\nsend_attempts = 6\n")
    session = requests.Session()
    now = int(time.time())
    for i in range(150):
        assert deliver(session, server, text_push(emulator, f"c{i}", 5000 + i, f"m{i}")).ok
    # WeChat's view differs from the server's for two users: their windows closed or used up.
    closed = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY).build(
        {"ToUserName": GH, "FromUserName": "closed", "CreateTime": now, "MsgType": "text",
         "Content": "late", "MsgId": 1})
    emulator.emulator.notify_push(APPID, {"ToUserName": GH, "FromUserName": "closed",
                                          "CreateTime": now - 49 * 3600, "MsgType": "text",
                                          "Content": "late", "MsgId": 1})
    assert deliver(session, server, closed).ok
    store = open_store(store_url)
    assert wait_for(lambda: (s := store.outbox_stats())["pending"] + s["sending"] == 0
                    and s["sent"] + s["dead"] == 151, timeout=240), store.outbox_stats()
    dead = store.outbox_list(state="dead", limit=1000)
    assert all(row.errcode is not None for row in dead)
    assert [r.errcode for r in dead if r.openid == "closed"] == [45015]
    calls = [c for c in emulator.emulator.calls("/cgi-bin/message/custom/send")
             if (c.body or {}).get("touser") == "closed"]
    final = list(itertools.dropwhile(lambda c: c.errcode != 45015, calls))
    assert len(final) == 1                                   # 45015: never tried again


def test_tokens_refused_for_a_while_cost_a_handful_of_fetches(servers, emulator, tmp_path,
                                                              store_url):
    """Every send refused with 40001: the senders retry with backoff, but the token is
    fetched again at most once a minute; once WeChat takes the token again, every reply goes
    out."""
    emulator.emulator.set_faults(force_40001_rate=1.0, paths=("/cgi-bin/message/custom/send",))
    server = start(servers, emulator, tmp_path, store_url,
                   server="retry_delay = 0.05\nsend_attempts = 100\n")
    session = requests.Session()
    for i in range(10):
        assert deliver(session, server, text_push(emulator, f"r{i}", 8000 + i, f"m{i}")).ok
    started = time.monotonic()
    refused = lambda: [c for c in emulator.emulator.calls("/cgi-bin/message/custom/send")
                       if c.errcode == 40001]
    assert wait_for(lambda: len(refused()) >= 50, timeout=20)
    assert time.monotonic() - started < 20
    fetches = emulator.emulator.token_fetches(APPID)
    assert fetches["stable_token"] <= 3, fetches     # the first, then one normal + one forced
    emulator.emulator.set_faults()
    assert wait_for(lambda: len(emulator.emulator.sent(APPID)) == 10, timeout=60)
    assert sorted(p["text"]["content"] for _, _, p in emulator.emulator.sent(APPID)) == \
        sorted(f"echo m{i}" for i in range(10))
    assert emulator.emulator.token_fetches(APPID)["stable_token"] <= 3


def test_messages_of_one_second_each_reopen_the_send_window(servers, emulator, tmp_path,
                                                            store_url):
    """WeChat resets a user's count of 5 with every message, also several written in the same
    second (one CreateTime): 8 messages, each answered before the next, get 8 replies."""
    server = start(servers, emulator, tmp_path, store_url)
    session = requests.Session()
    created = int(time.time())
    for n in range(8):
        push = text_push(emulator, "o-burst", 6000 + n, f"m{n}", created=created)
        assert deliver(session, server, push).text == "success"
        assert wait_for(lambda: len(emulator.emulator.sent(APPID)) == n + 1, timeout=20), n
    store = open_store(store_url)
    assert wait_for(lambda: store.outbox_stats()["sent"] == 8, timeout=10), store.outbox_stats()
    assert store.outbox_stats()["dead"] == 0
    assert [p["text"]["content"] for _, _, p in emulator.emulator.sent(APPID)] == \
        [f"echo m{n}" for n in range(8)]
    assert [c.errcode for c in emulator.emulator.calls("/cgi-bin/message/custom/send")] == [0] * 8


def test_a_push_that_crashes_its_handler_is_set_aside_after_its_attempts(servers, emulator,
                                                                          tmp_path, store_url):
    """Its handler's process dies every time; once the push has had its attempts it is set
    aside, listed by ``wxpush inbox``, and the server goes on handling the others."""
    server = start(servers, emulator, tmp_path, store_url,
                   server="lease = 2\nhandle_attempts = 2\n")
    session = requests.Session()
    crash = text_push(emulator, "u-crash", 66, "crash")
    assert deliver(session, server, crash).ok
    store = open_store(store_url)
    assert wait_for(lambda: store.inbox_stats()["dead"] == 1, timeout=60), store.inbox_stats()
    assert handler_log(tmp_path)[("start", "66")] == 2
    # the store marks the push dead a moment before the process writes its log line
    set_aside = f"push set aside key={APPID}:msg:66 attempts=2 error=LeaseExpired"
    assert wait_for(lambda: set_aside in server.logs(), timeout=10), server.logs()
    listed = subprocess.run([sys.executable, "-m", "webhook.cli", "inbox", "--config",
                             str(server.config), "list", "--state", "dead"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.startswith(f"{APPID}:msg:66  dead"), listed
    assert deliver(session, server, text_push(emulator, "u-after", 67, "hello")).ok
    assert wait_for(lambda: [p for _, to, p in emulator.emulator.sent(APPID) if to == "u-after"],
                    timeout=30)
    assert handler_log(tmp_path)[("start", "66")] == 2          # never tried again
