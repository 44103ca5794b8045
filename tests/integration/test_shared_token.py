"""Two servers (two "hosts") on one Redis share one access_token; the process holding the
refresh lock dies mid-refresh, the next one refreshes once, and every reply is sent."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
import redis
import requests

from harness import AES_KEY, APPID, TOKEN, ServerProcess, wait_for
from webhook.testing import PushBuilder

pytestmark = pytest.mark.slow
LOCK = f"lock:token:{APPID}"


def test_lock_holder_killed_mid_refresh(servers, emulator, redis_server, tmp_path):
    db = random.randrange(1, 16)
    store = f"redis://127.0.0.1:{redis_server.port}/{db}"
    redis_db = redis.Redis(host="127.0.0.1", port=redis_server.port, db=db, decode_responses=True)
    redis_db.flushdb()
    rules = '[[rule]]\nname = "echo"\nkeywords = ["hi"]\nreply.text = "hello"\n'
    hosts = [ServerProcess(tmp_path / f"host{i}", store=store, api_base=emulator.url, rules=rules)
             for i in range(2)]
    servers.extend(hosts)
    for host in hosts:
        host.start()
    # The first token fetch hangs long enough to kill the process that made it.
    emulator.emulator.set_faults(delay_rate=1.0, delay_seconds=4.0, paths=("/cgi-bin/stable_token",))
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)

    def push(i: int) -> None:
        fields = {"ToUserName": "gh_0123456789ab", "FromUserName": f"o-{i}",
                  "CreateTime": int(time.time()), "MsgType": "text", "Content": "hi",
                  "MsgId": 3_000 + i}
        emulator.emulator.notify_push(APPID, fields)
        built = builder.build(fields)
        host = hosts[i % 2]
        assert requests.post(f"{host.url}/wechat/{APPID}", params=built.query, data=built.body,
                             timeout=5).text == "success"

    push(0)
    # The lock is taken before the fetch is sent: wait until the fetch hangs at WeChat.
    assert wait_for(lambda: emulator.emulator.in_flight("/cgi-bin/stable_token"), timeout=10)
    holder = redis_db.get(f"wxpush:{LOCK}")
    assert holder, "nobody took the refresh lock"
    pid = int(holder.split("|", 1)[1].split(":")[1])
    assert any(pid in host.delivery_pids() for host in hosts)
    os.kill(pid, signal.SIGKILL)                      # mid-refresh: the fetch is still hanging
    emulator.emulator.set_faults()
    for i in range(1, 20):                            # pushes to both hosts meanwhile
        push(i)
    assert wait_for(lambda: len({u for _, u, _ in emulator.emulator.sent(APPID)}) == 20,
                    timeout=60), emulator.emulator.sent(APPID)
    fetches = emulator.emulator.token_fetches(APPID)
    # The dead holder's fetch, then exactly one refresh by the next process.
    assert fetches["stable_token"] == 2, fetches
    assert all(call.errcode == 0 for call in emulator.emulator.calls("/cgi-bin/message/custom/send"))
