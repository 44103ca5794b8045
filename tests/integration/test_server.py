"""``wxpush serve`` for real: gunicorn with its settings on a loopback port, the emulator
behind it, pushes over HTTP exactly as WeChat sends them."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from webhook.testing import PushBuilder
from webhook.testing.processes import connections

from harness import AES_KEY, APPID, ROOT, SECRET, TOKEN, ServerProcess, wait_for

pytestmark = pytest.mark.slow

RULES = """
[[rule]]
name = "hours"
keywords = ["营业时间"]
reply.text = "9:00–18:00"
"""


def start(servers, emulator, tmp_path, store: str | None = None, **kwargs) -> ServerProcess:
    server = ServerProcess(tmp_path / "server", store=store or f"sqlite:///{tmp_path}/wxpush.db",
                           api_base=emulator.url, **kwargs)
    servers.append(server)
    return server.start()


def fresh_text(content: str, openid: str, msg_id: int) -> dict:
    return {"ToUserName": "gh_0123456789ab", "FromUserName": openid,
            "CreateTime": int(time.time()), "MsgType": "text", "Content": content, "MsgId": msg_id}


def test_signed_encrypted_push_over_http(servers, emulator, tmp_path):
    server = start(servers, emulator, tmp_path, rules=RULES)
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
    endpoint = f"{server.url}/wechat/{APPID}"
    verify = requests.get(endpoint, params=builder.url_verification("echo-123"), timeout=5)
    assert (verify.status_code, verify.text) == (200, "echo-123")

    fields = fresh_text("营业时间?", "o-http", 1)
    emulator.emulator.notify_push(APPID, fields)
    push = builder.build(fields)
    answer = requests.post(endpoint, params=push.query, data=push.body, timeout=5)
    assert (answer.status_code, answer.text) == (200, "success")
    assert wait_for(lambda: emulator.emulator.sent(APPID), timeout=20)
    assert emulator.emulator.sent(APPID)[0][2] == {"msgtype": "text", "text": {"content": "9:00–18:00"}}

    forged = requests.post(endpoint, params={**push.query, "msg_signature": "0" * 40},
                           data=push.body, timeout=5)
    assert forged.status_code == 403
    for secret in (AES_KEY, TOKEN, SECRET):
        assert secret not in server.logs()


def test_a_message_typed_with_a_line_break_gets_its_reply(servers, emulator, tmp_path):
    """Customers type line breaks; the decrypted XML keeps them as CRLF."""
    server = start(servers, emulator, tmp_path, rules=RULES)
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
    fields = fresh_text("你好\r\n请问营业时间?", "o-crlf", 7)
    emulator.emulator.notify_push(APPID, fields)
    push = builder.build(fields)
    answer = requests.post(f"{server.url}/wechat/{APPID}", params=push.query, data=push.body,
                           timeout=5)
    assert (answer.status_code, answer.text) == (200, "success")
    assert wait_for(lambda: emulator.emulator.sent(APPID), timeout=20)
    assert emulator.emulator.sent(APPID)[0][2]["text"] == {"content": "9:00–18:00"}


def test_bodies_with_and_without_a_declared_length(servers, emulator, tmp_path):
    """A declared Content-Length is read as is; a chunked body (none declared) is read up to
    max_body, and one over it is refused."""
    server = start(servers, emulator, tmp_path, rules=RULES, server="max_body = 4096")
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
    endpoint = f"{server.url}/wechat/{APPID}"
    push = builder.build(fresh_text("你好", "o-chunked", 7))
    chunked = requests.post(endpoint, params=push.query, data=iter([push.body[:50], push.body[50:]]),
                            timeout=5)
    assert (chunked.status_code, chunked.text) == (200, "success")
    big = builder.build(fresh_text("x" * 5000, "o-chunked", 8))
    for data in (big.body, iter([big.body])):
        refused = requests.post(endpoint, params=big.query, data=data, timeout=5)
        assert (refused.status_code, refused.text) == (413, "body over 4096 bytes")


def test_a_mini_program_body_is_read_chunked_or_not(servers, emulator, tmp_path):
    """The /apps endpoints read gunicorn's input as the push path does: a chunked body used to
    read as empty (400)."""
    server = start(servers, emulator, tmp_path, server="max_body = 4096")
    login = f"{server.url}/apps/{APPID}/login"
    json_type = {"Content-Type": "application/json"}
    for openid in ("o-declared", "o-chunked"):
        body = ('{"code": "%s"}' % emulator.emulator.login_code(APPID, openid)).encode()
        data = body if openid == "o-declared" else iter([body[:5], body[5:]])
        answer = requests.post(login, data=data, headers=json_type, timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["openid"] == openid
    padded = b'{"code": "c", "pad": "' + b"x" * 5000 + b'"}'
    refused = requests.post(login, data=iter([padded]), headers=json_type, timeout=5)
    # refused by the worker as the chunks arrive, before the app reads any of it
    assert (refused.status_code, refused.text) == (413, "body over 4096 bytes")
    form = requests.post(login, data={"code": "c"}, timeout=5)
    assert form.status_code == 415
    assert form.json() == {"errcode": 47001, "errmsg": "Content-Type must be application/json"}


def test_rules_reload_while_running(servers, emulator, tmp_path):
    server = start(servers, emulator, tmp_path, rules=RULES)
    rules = server.directory / "rules.toml"
    rules.write_text(RULES.replace("9:00–18:00", "10:00–20:00"), encoding="utf-8")
    every = server.workers + server.deliveries        # and the delivery processes
    assert wait_for(lambda: server.logs().count("rules reloaded") == every, timeout=2.5)
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
    session = requests.Session()
    for i in range(6):                                # reaches both workers
        fields = fresh_text("营业时间", f"o-reload-{i}", 100 + i)
        emulator.emulator.notify_push(APPID, fields)
        push = builder.build(fields)
        assert session.post(f"{server.url}/wechat/{APPID}", params=push.query, data=push.body,
                            timeout=5).text == "success"
    assert wait_for(lambda: len(emulator.emulator.sent(APPID)) == 6, timeout=20)
    assert {p["text"]["content"] for _, _, p in emulator.emulator.sent(APPID)} == {"10:00–20:00"}

    rules.write_text('[[rule]]\nname = "broken"\nregex = "("\nreply.text = "x"\n', encoding="utf-8")
    assert wait_for(lambda: server.logs().count("rules reload failed") == every, timeout=2.5)
    fields = fresh_text("营业时间", "o-reload-bad", 200)
    emulator.emulator.notify_push(APPID, fields)
    push = builder.build(fields)
    assert session.post(f"{server.url}/wechat/{APPID}", params=push.query, data=push.body,
                        timeout=5).text == "success"
    assert wait_for(lambda: len(emulator.emulator.sent(APPID)) == 7, timeout=20)
    assert "rules.toml:3" in server.logs()                # the previous rules answered


def test_plaintext_mode_warns_at_start(servers, emulator, tmp_path):
    server = start(servers, emulator, tmp_path, mode="plaintext")
    assert "plaintext mode" in server.logs()


def test_wxpush_push_command(servers, emulator, tmp_path):
    server = start(servers, emulator, tmp_path, rules=RULES)
    result = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "push", f"{server.url}/wechat/{APPID}",
         "--config", str(server.config), "--appid", APPID, "--text", "营业时间",
         "--retries", "3", "--emulator", emulator.url],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("success") == 4
    assert re.search(r"^reply \d+: sent  text 9:00–18:00$", result.stdout, re.MULTILINE), \
        result.stdout
    assert wait_for(lambda: len(emulator.emulator.sent(APPID)) == 1, timeout=20)
    time.sleep(1)
    assert len(emulator.emulator.sent(APPID)) == 1    # three retries, one reply


def test_wxpush_push_without_the_emulator_told_shows_the_dead_reply(servers, emulator,
                                                                     tmp_path):
    """The emulator, as WeChat, refuses a reply to a customer it never saw write."""
    server = start(servers, emulator, tmp_path, rules=RULES)
    result = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "push", f"{server.url}/wechat/{APPID}",
         "--config", str(server.config), "--text", "营业时间", "--wait", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "delivery 1: HTTP 200 success"
    assert re.fullmatch(r"reply \d+: dead errcode=40003 .*  text 9:00–18:00", lines[1]), lines
    assert lines[2].startswith("  40003: WeChat sends only to a customer who wrote") \
        and "add --emulator URL" in lines[2]


def test_serve_runs_its_delivery_processes_and_sigterm_stops_every_process(servers, emulator,
                                                                            tmp_path, store_url):
    server = start(servers, emulator, tmp_path, store=store_url, rules=RULES)
    delivery = wait_for(lambda: len(server.delivery_pids()) == 2 and server.delivery_pids(),
                        timeout=20)
    assert not set(delivery) & set(server.worker_pids())
    for pid in delivery:   # [server] senders (128) shared between them
        assert wait_for(lambda: f"[{pid}] [INFO] delivery started pid={pid} senders=64"
                        in server.logs())
    # Their every thread yields the CPU to the answers: nicer than the request workers.
    lowered = min(19, nice(server.worker_pids()[0]) + 10)
    assert {nice(int(task.name)) for pid in delivery
            for task in Path(f"/proc/{pid}/task").iterdir()} == {lowered}
    processes = [server.process.pid, *server.worker_pids(), *delivery]
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert not [pid for pid in processes if Path(f"/proc/{pid}").exists()]
    assert "delivery stopping" in server.logs()


def nice(pid: int) -> int:
    """The nice value of a process or thread (its task id), from Linux's /proc."""
    return int(Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()[16])


def test_bad_config_is_one_line(tmp_path):
    config = tmp_path / "wxpush.toml"
    config.write_text('[[apps]]\nappid = "wx1"\ntoken = "t"\nmode = "sfae"\n', encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "webhook.cli", "serve", "--config", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and f"{config}:4: mode" in result.stderr


def test_the_access_log_is_written_only_when_asked_for(servers, emulator, tmp_path):
    quiet = start(servers, emulator, tmp_path / "quiet")
    logged = start(servers, emulator, tmp_path / "logged", env={"WXPUSH_ACCESS_LOG": "-"})
    for server in (quiet, logged):
        assert requests.get(server.url + "/healthz", timeout=5).ok
    assert wait_for(lambda: '"GET /healthz HTTP/1.1" 200' in logged.logs())
    assert "GET /healthz" not in quiet.logs()


@pytest.mark.parametrize("asked", [False, True])
def test_access_log_fields_are_built_only_for_a_line_written(asked):
    """gunicorn would build them for every request, access log off or on."""
    probe = ("import runpy, gunicorn.config\n"
             "conf = runpy.run_path('gunicorn.conf.py')\n"
             "cfg = gunicorn.config.Config()\n"
             "for key in ('logconfig_dict', 'accesslog', 'loglevel', 'logger_class'):\n"
             "    cfg.set(key, conf[key])\n"
             "log = cfg.logger_class(cfg)\n"
             "built = []\n"
             "log.atoms = lambda *args: built.append(args) or {}\n"
             "log.access(None, None, {}, 0.001)\n"
             "print(len(built))\n")
    env = {k: v for k, v in os.environ.items() if k != "WXPUSH_ACCESS_LOG"}
    if asked:
        env["WXPUSH_ACCESS_LOG"] = "-"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == ("1" if asked else "0")


def test_a_kept_alive_connection_is_closed_after_keepalive_requests(servers, emulator, tmp_path):
    """So connections a worker took too many of spread out again when they reconnect."""
    server = start(servers, emulator, tmp_path, env={"WXPUSH_KEEPALIVE_REQUESTS": "3"})
    with requests.Session() as session:
        answers = [session.get(server.url + "/healthz", timeout=5) for _ in range(4)]
    assert [a.headers["Connection"] for a in answers] == ["keep-alive", "keep-alive", "close",
                                                          "keep-alive"]
    assert all(a.text == "ok" for a in answers)


def read_answer(conn: socket.socket) -> bytes:
    """The body of the next answer on ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("closed before an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += conn.recv(4096)
    return body


def open_kept_alive(server: ServerProcess, count: int) -> list[socket.socket]:
    """``count`` connections, one after another, each answered once and kept open."""
    opened = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: wxpush\r\n\r\n")
        assert read_answer(conn) == b"ok"
        opened.append(conn)
    return opened


def held(server: ServerProcess, total: int) -> dict[int, int]:
    """Connections per worker, once the workers hold all ``total`` of them."""
    return wait_for(lambda: (c := connections(server.worker_pids(), server.port))
                    and sum(c.values()) == total and c)


def test_workers_share_the_connections_evenly(servers, emulator, tmp_path):
    """Plain gthread workers race for each connection and the busier one tends to win (16
    connections split 4/12 or 0/16); ours defer to the one holding fewer (fairworker.py)."""
    server = start(servers, emulator, tmp_path)
    opened = open_kept_alive(server, 16)
    try:
        counts = sorted(held(server, 16).values())
        assert counts[-1] - counts[0] <= 2, counts
    finally:
        for conn in opened:
            conn.close()


def test_a_stuck_worker_holding_fewer_delays_connections_only_briefly(servers, emulator,
                                                                       tmp_path):
    """The busier worker waits a few ms for the other to take a connection, then takes it."""
    server = start(servers, emulator, tmp_path)
    opened = open_kept_alive(server, 3)
    try:
        counts = held(server, 3)
        stuck = min(counts, key=counts.get)
        os.kill(stuck, signal.SIGSTOP)
        try:
            started = time.monotonic()
            opened += open_kept_alive(server, 4)
            elapsed = time.monotonic() - started
        finally:
            os.kill(stuck, signal.SIGCONT)
        assert held(server, 7)[stuck] == counts[stuck]
        assert elapsed < 1.0
    finally:
        for conn in opened:
            conn.close()


def raw_push(builder: PushBuilder, fields: dict) -> bytes:
    push = builder.build(fields)
    return (f"POST {push.url(f'/wechat/{APPID}')} HTTP/1.1\r\nHost: wxpush\r\n"
            f"Content-Type: text/xml\r\nContent-Length: {len(push.body)}\r\n\r\n"
            ).encode("ascii") + push.body


def test_a_push_still_arriving_holds_up_no_other(servers, emulator, tmp_path):
    """A whole push is answered by the worker's loop; one whose body is still on its way is
    read by a pool thread, and the loop answers the others meanwhile."""
    server = start(servers, emulator, tmp_path, workers=1)
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
    slow, quick = open_kept_alive(server, 2)
    try:
        late = raw_push(builder, fresh_text("你好", "o-late", 1))
        slow.sendall(late[:-10])
        time.sleep(0.2)
        for i in range(5):
            started = time.monotonic()
            quick.sendall(raw_push(builder, fresh_text("你好", "o-quick", 10 + i)))
            assert read_answer(quick) == b"success"
            assert time.monotonic() - started < 1.0
        slow.sendall(late[-10:])
        assert read_answer(slow) == b"success"
    finally:
        slow.close()
        quick.close()


def test_a_mini_program_call_waiting_on_wechat_holds_up_no_push(servers, emulator, tmp_path):
    """Its path is not one the loop answers, even on a kept-alive connection: it waits in a
    pool thread."""
    server = start(servers, emulator, tmp_path, workers=1)
    emulator.emulator.set_faults(delay_rate=1.0, delay_seconds=3.0, paths=("/sns/jscode2session",))
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)

    def log_in() -> requests.Response:
        with requests.Session() as front_end:
            front_end.get(f"{server.url}/healthz", timeout=5)
            return front_end.post(f"{server.url}/apps/{APPID}/login", json={"code": "c"},
                                  timeout=10)

    with ThreadPoolExecutor(1) as pool, requests.Session() as session:
        started = time.monotonic()
        login = pool.submit(log_in)
        assert wait_for(lambda: emulator.emulator.in_flight("/sns/jscode2session"), timeout=5)
        for i in range(5):
            push = builder.build(fresh_text("你好", "o-during-login", 20 + i))
            answer = session.post(f"{server.url}/wechat/{APPID}", params=push.query,
                                  data=push.body, timeout=1)
            assert answer.text == "success"
        assert not login.done()
        assert login.result(timeout=10).status_code < 500     # answered, after WeChat's 3 s
        assert time.monotonic() - started >= 3.0



def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _holds_flock(pid: int, path: Path) -> bool:
    """Whether ``pid`` holds an flock on ``path`` (its line in /proc/locks; a waiter's line
    has an arrow)."""
    inode = os.stat(path).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "FLOCK" and int(fields[4]) == pid \
                and int(fields[5].rpartition(":")[2]) == inode:
            return True
    return False


def test_a_delivery_process_frozen_holding_the_store_lock_holds_up_nothing_for_long(
        servers, emulator, tmp_path):
    """SIGSTOP the delivery process while it holds the store's lock file: logins get 503
    within the store's 2 s, not a hang that uses up the request threads; pushes are
    recorded and answered; the supervisor replaces the frozen process once it has been
    silent ``stall_timeout`` seconds, and the pushes recorded meanwhile are answered."""
    # Long enough that the supervisor does not replace the frozen process (freeing the lock)
    # before every login has met the lock, however slowly the machine runs.
    server = start(servers, emulator, tmp_path, rules=RULES, server="stall_timeout = 12")
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
    endpoint = f"{server.url}/wechat/{APPID}"
    frozen = wait_for(server.delivery_pids, timeout=20)[0]

    def push(openid: str, msg_id: int, session: requests.Session | None = None):
        fields = fresh_text("营业时间?", openid, msg_id)
        emulator.emulator.notify_push(APPID, fields)
        built = builder.build(fields)
        return (session or requests).post(endpoint, params=built.query, data=built.body,
                                          timeout=10)

    stop = threading.Event()

    def keep_it_writing() -> None:   # every push is ingested, handled and sent: writes
        with requests.Session() as session:
            for i in itertools.count():
                if stop.is_set():
                    return
                assert push(f"o-stream-{i}", 100_000 + i, session).status_code == 200

    lock = tmp_path / "wxpush.db-wxpush.lock"
    with ThreadPoolExecutor(1) as writer:
        streaming = writer.submit(keep_it_writing)
        try:
            for _ in range(500):
                os.kill(frozen, signal.SIGSTOP)
                assert wait_for(lambda: _state(frozen) == "T", timeout=5)
                if _holds_flock(frozen, lock):
                    break
                os.kill(frozen, signal.SIGCONT)
                time.sleep(0.005)
            else:
                pytest.fail("the delivery process never held the lock when stopped")
        finally:
            stop.set()
            streaming.result(timeout=30)

    def log_in(i: int) -> tuple[int, float]:
        code = emulator.emulator.login_code(APPID, f"o-login-{i}")
        started = time.monotonic()
        answer = requests.post(f"{server.url}/apps/{APPID}/login", json={"code": code},
                               timeout=30)
        return answer.status_code, time.monotonic() - started

    with ThreadPoolExecutor(12) as front_ends:   # more than the workers' 2 x 4 threads
        logins = [front_ends.submit(log_in, i) for i in range(12)]
        time.sleep(0.2)
        for i in range(5):                       # each on a new connection
            started = time.monotonic()
            answer = push(f"o-frozen-{i}", 200_000 + i)
            assert (answer.status_code, answer.text) == (200, "success")
            assert time.monotonic() - started < 5.0
        answers = [login.result() for login in logins]
    assert {status for status, _ in answers} == {503}
    assert max(spent for _, spent in answers) < 6.0, answers

    assert wait_for(lambda: not Path(f"/proc/{frozen}").exists() or _state(frozen) == "Z",
                    timeout=30)
    assert wait_for(lambda: len(server.delivery_pids()) == 2, timeout=30)
    assert f"delivery process pid={frozen} made no progress" in server.logs()
    users = {f"o-frozen-{i}" for i in range(5)}
    assert wait_for(lambda: users <= {to for _, to, _ in emulator.emulator.sent(APPID)},
                    timeout=60)
    assert log_in(99)[0] == 200
