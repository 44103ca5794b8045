"""The wxpush command: check-config, outbox and inbox operations, demo, and one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from webhook.cli import main
from webhook.cli.queues import parse_age
from webhook.push.messages import hashed
from webhook.store import InboxEntry, NewReply, open_store

from demo_steps import assert_demo_steps

ROOT = Path(__file__).parents[3]
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "wxpush.toml"
    path.write_text(f'[server]\nstore = "sqlite:///w.db"\n\n[[apps]]\nappid = "wx1"\n'
                    f'secret = "the-app-secret"\ntoken = "the-token"\nencoding_aes_key = "{KEY}"\n',
                    encoding="utf-8")
    return path


def test_check_config_prints_what_it_serves_without_secrets(config, capsys):
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "/wechat/wx1  safe xml" in out
    assert "20 at once, then 1/s per client; 200 at once, then 20/s per app" in out
    assert "proxies trusted: 127.0.0.1, ::1" in out
    for secret in ("the-app-secret", "the-token", KEY):
        assert secret not in out


def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[apps]]\nappid = "wx1"\ntoken = 5\n', encoding="utf-8")
    assert main(["check-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:3: token: must be a string" in err


def test_outbox_operations(config, tmp_path, capsys):
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    store.inbox_record(InboxEntry(key="wx1:msg:1", appid="wx1", format="xml", payload="<xml/>",
                                  answer="success", received_at=0), ttl=60)
    store.inbox_take(owner="t", lease=30, limit=1, max_attempts=5)
    rows = store.inbox_finish("wx1:msg:1", [NewReply("wx1", "o1", '{"msgtype":"text"}', "r"),
                                            NewReply("wx1", "o2", '{"msgtype":"text"}', "r")],
                              owner="t")
    claimed = store.outbox_claim(owner="t", lease=30, limit=10)
    store.outbox_dead(claimed[0].id, owner="t", errcode=45015, errmsg="response out of time limit")
    store.outbox_sent(claimed[1].id, owner="t")
    assert main(["outbox", "--config", str(config), "stats"]) == 0
    assert capsys.readouterr().out.split() == ["pending", "0", "sending", "0", "sent", "1",
                                               "dead", "1"]
    assert main(["outbox", "--config", str(config), "list", "--state", "dead"]) == 0
    assert "errcode=45015" in capsys.readouterr().out
    assert main(["outbox", "--config", str(config), "retry", "--all-dead"]) == 0
    assert "requeued 1 row" in capsys.readouterr().out
    assert store.outbox_stats()["pending"] == 1
    assert main(["outbox", "--config", str(config), "purge", "--older-than", "0s"]) == 0
    assert "purged 1" in capsys.readouterr().out
    assert len(rows) == 2


def test_listings_show_who_and_what_and_a_hash_leads_back_to_the_openid(config, tmp_path,
                                                                         capsys):
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    openid, other = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "o_other_customer_openid_00001"
    payload = (f"<xml><ToUserName>gh_1</ToUserName><FromUserName>{openid}</FromUserName>"
               "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>几点开门</Content>"
               "<MsgId>7</MsgId></xml>")
    store.inbox_record(InboxEntry(key="wx1:msg:7", appid="wx1", format="xml", payload=payload,
                                  answer="success", received_at=time.time()), ttl=60)
    store.inbox_take(owner="t", lease=30, limit=1, max_attempts=5)
    store.inbox_finish("wx1:msg:7", [
        NewReply("wx1", openid, '{"msgtype": "text", "text": {"content": "' + "营业" * 30 + '"}}',
                 "hours"),
        NewReply("wx1", other, '{"msgtype": "image", "image": {"media_id": "MEDIA_1"}}', "pic")],
        owner="t")
    store.inbox_record(InboxEntry(key="wx1:msg:8", appid="wx1", format="xml", payload=payload,
                                  answer="success", received_at=time.time()), ttl=60)
    store.inbox_take(owner="t", lease=30, limit=1, max_attempts=5)
    user = hashed(openid)
    assert main(["outbox", "list", "--config", str(config)]) == 0
    image, text = capsys.readouterr().out.splitlines()
    assert f"appid=wx1 user={user} rule=hours attempts=0  text {'营业' * 20}...(+20)" in text
    assert f"user={hashed(other)} rule=pic" in image and image.endswith("  image MEDIA_1")
    assert openid not in text
    assert main(["outbox", "list", "--reveal", "--config", str(config)]) == 0
    assert f"user={openid} rule=hours" in capsys.readouterr().out
    assert main(["inbox", "list", "--config", str(config)]) == 0
    (pending,) = capsys.readouterr().out.splitlines()
    assert pending.startswith("wx1:msg:8  pending") and f" user={user} attempts=1" in pending

    assert main(["user", openid]) == 0
    assert capsys.readouterr().out == f"{user}\n"
    assert main(["user", user, "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"{openid}\n"
    assert main(["user", hashed("o_nobody"), "--config", str(config)]) == 1
    assert capsys.readouterr().err == (f"wxpush user: no customer with hash {hashed('o_nobody')} "
                                       "among the newest 10000 replies and the pushes waiting "
                                       "or dead\n")


def test_a_sender_found_only_in_a_dead_push_is_found(config, tmp_path, capsys):
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    openid = "o_dead_push_sender_000000001"
    store.inbox_record(InboxEntry(key="wx1:msg:9", appid="wx1", format="json",
                                  payload=f'{{"FromUserName": "{openid}", "MsgType": "text"}}',
                                  answer="success", received_at=time.time()), ttl=60)
    store.inbox_take(owner="t", lease=30, limit=1, max_attempts=5)
    store.inbox_dead("wx1:msg:9", owner="t", error="RuntimeError at bot.py:1")
    assert main(["user", "--config", str(config), hashed(openid)]) == 0
    assert capsys.readouterr().out == f"{openid}\n"


def test_outbox_retry_of_an_unknown_row_fails(config, capsys):
    assert main(["outbox", "--config", str(config), "retry", "999"]) == 1
    assert capsys.readouterr().err == "wxpush outbox: no dead row with id 999\n"


def test_inbox_operations(config, tmp_path, capsys):
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    for i in range(4):
        store.inbox_record(InboxEntry(key=f"wx1:msg:{i}", appid="wx1", format="xml",
                                      payload="<xml/>", answer="success",
                                      received_at=time.time()), ttl=60)
        if i < 3:   # the last is recorded, not yet taken
            store.inbox_take(owner="t", lease=30, limit=1, max_attempts=5)
    store.inbox_dead("wx1:msg:0", owner="t", error="RuntimeError at bot.py:12")
    store.inbox_dead("wx1:msg:1", owner="t", error="MalformedRequest: CreateTime is missing")
    assert main(["inbox", "--config", str(config), "stats"]) == 0
    assert capsys.readouterr().out.split() == ["pending", "2", "dead", "2"]
    assert main(["inbox", "--config", str(config), "list", "--state", "dead"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in listed] == [["wx1:msg:1", "dead"], ["wx1:msg:0", "dead"]]
    assert listed[1].endswith("attempts=1 error=RuntimeError at bot.py:12")
    assert main(["inbox", "--config", str(config), "retry", "wx1:msg:0"]) == 0
    assert capsys.readouterr().out == "requeued 1 push\n"
    assert store.inbox_stats() == {"pending": 3, "dead": 1}
    assert main(["inbox", "--config", str(config), "retry", "wx1:msg:0"]) == 1
    assert capsys.readouterr().err == "wxpush inbox: no dead push with key wx1:msg:0\n"
    assert main(["inbox", "--config", str(config), "purge", "--older-than", "1h"]) == 0
    assert capsys.readouterr().out == "purged 0 pushes\n"
    assert main(["inbox", "--config", str(config), "purge", "--older-than", "0s"]) == 0
    assert capsys.readouterr().out == "purged 1 push\n"
    assert main(["inbox", "--config", str(config), "retry", "--all-dead"]) == 0
    assert capsys.readouterr().out == "requeued 0 pushes\n"
    assert main(["inbox", "--config", str(config), "list", "--state", "dead"]) == 0
    assert capsys.readouterr().out == "no pushes\n"


@pytest.mark.parametrize("text, seconds", [("2w", 1209600), ("7d", 604800), ("12h", 43200),
                                           ("30m", 1800), ("45s", 45)])
def test_ages(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("queue", ["outbox", "inbox"])
def test_bad_age_is_one_line_naming_the_flag(config, capsys, queue):
    assert main([queue, "--config", str(config), "purge", "--older-than", "a week"]) == 2
    assert capsys.readouterr().err == (f"wxpush {queue}: --older-than: 'a week' is not an age "
                                       "like 2w, 7d, 12h, 30m or 45s\n")


@pytest.mark.parametrize("queue", ["outbox", "inbox"])
@pytest.mark.parametrize("action", [["stats"], ["list"], ["retry", "--all-dead"],
                                    ["purge", "--older-than", "1w"]])
def test_config_is_taken_before_or_after_the_action(config, tmp_path, monkeypatch, capsys,
                                                    queue, action):
    monkeypatch.chdir(tmp_path)            # no ./wxpush.toml to fall back on: w.db is config's
    config = config.rename(tmp_path / "shop.toml")
    assert main([queue, "--config", str(config), *action]) == 0
    before = capsys.readouterr().out
    assert main([queue, *action, "--config", str(config)]) == 0
    assert capsys.readouterr().out == before


@pytest.mark.slow
def test_demo_plays_a_conversation(tmp_path):
    # run from another directory, with this checkout's webhook first on the path
    result = subprocess.run([sys.executable, "-m", "webhook.cli", "demo"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert_demo_steps(result.stdout, ROOT / "webhook" / "examples")
    assert (f"next      wxpush serve --config {ROOT / 'wxpush.example.toml'}: your own server "
            "with these rules") in result.stdout      # the checkout's example config
    assert list(tmp_path.iterdir()) == []


def test_check_config_refuses_a_router_that_does_not_import(tmp_path, capsys):
    path = tmp_path / "wxpush.toml"
    path.write_text(f'[server]\nrouters = ["no_such_module:router"]\n\n[[apps]]\nappid = "wx1"\n'
                    f'token = "t"\nencoding_aes_key = "{KEY}"\n', encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot import router 'no_such_module:router'" in err


def test_a_bad_flag_is_one_line_naming_the_flag(config, capsys):
    assert main(["serve", "--config", str(config), "--workers", "0"]) == 2
    assert capsys.readouterr().err == "wxpush serve: --workers: must be at least 1\n"


def test_worker_with_a_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[apps]]\nappid = "wx1"\ntoken = 5\n', encoding="utf-8")
    assert main(["deliver", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wxpush deliver: ") and f"{bad}:3: token" in err and err.count("\n") == 1


def test_worker_with_a_bad_log_level_is_one_line_and_exit_2(config, capsys, monkeypatch):
    monkeypatch.setenv("WXPUSH_LOG_LEVEL", "loud")
    assert main(["deliver", "--config", str(config)]) == 2
    assert capsys.readouterr().err == ("wxpush deliver: environment: WXPUSH_LOG_LEVEL: must be "
                                       "one of debug, info, warning, error, critical, not "
                                       "'loud'\n")


def run_worker(*args: str, up: Callable[[], bool]) -> tuple[int, str]:
    """``wxpush deliver ARGS`` until ``up()``, then SIGTERM: its exit code and stderr."""
    process = subprocess.Popen([sys.executable, "-m", "webhook.cli", "deliver", *args], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not up():
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, err


def test_worker_runs_until_sigterm_and_stops_cleanly(config, tmp_path):
    code, err = run_worker("--config", str(config),   # ingesting: it is up
                           up=(tmp_path / "w.db-inbox" / "reader.lock").exists)
    assert code == 0
    assert "delivery started" in err and "delivery stopping" in err
    for secret in ("the-app-secret", "the-token", KEY):
        assert secret not in err


@pytest.fixture
def redis_config(tmp_path, redis_server) -> Path:
    path = tmp_path / "redis.toml"
    path.write_text(f'[server]\nstore = "{redis_server.url}"\n\n[[apps]]\nappid = "wx1"\n'
                    f'token = "the-token"\nencoding_aes_key = "{KEY}"\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["serve", "deliver", "check-config"])
def test_a_redis_that_keeps_nothing_is_refused_in_one_line(redis_config, command):
    """The tests' Redis runs with appendonly no and no snapshots: a restart of it would lose
    pushes already answered."""
    bind = ["--bind", "127.0.0.1:1"] if command == "serve" else []   # (were it to start)
    result = subprocess.run([sys.executable, "-m", "webhook.cli", command, "--config",
                             str(redis_config), *bind],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    err = result.stderr
    assert err.count("\n") == 1 and err.startswith(f"wxpush {command}: the Redis at redis://")
    assert "keeps nothing across a restart" in err and "--allow-volatile-redis" in err


@pytest.mark.parametrize("how", ["flag", "config"])
def test_a_redis_that_keeps_nothing_is_used_when_allowed_with_a_warning(redis_config, how):
    args = ["--config", str(redis_config)]
    if how == "flag":
        args.append("--allow-volatile-redis")
    else:
        redis_config.write_text(redis_config.read_text().replace(
            "[server]\n", "[server]\nallow_volatile_redis = true\n"), encoding="utf-8")
    started = time.monotonic()
    code, err = run_worker(*args, up=lambda: time.monotonic() - started > 2)
    assert code == 0
    assert "[WARNING] the Redis at redis://" in err and "running anyway" in err
    assert "delivery started" in err


def test_console_hash_password_reads_stdin_and_prints_a_hash_the_config_takes(tmp_path):
    from webhook.config.settings import load
    from webhook.passwords import verify_password

    done = subprocess.run([sys.executable, "-m", "webhook.cli", "console", "hash-password"],
                          input="correct horse battery\n", capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip()
    assert verify_password("correct horse battery", hashed) and "correct" not in hashed
    config = tmp_path / "wxpush.toml"
    config.write_text(f'[[apps]]\nappid = "wx1"\ntoken = "t"\nmode = "plaintext"\n'
                      f'[[console.operators]]\nname = "ana"\npassword_hash = "{hashed}"\n')
    assert load(config).console.operator("ana").password_hash == hashed
    short = subprocess.run([sys.executable, "-m", "webhook.cli", "console", "hash-password"],
                           input="short\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert short.returncode == 2 and short.stdout == ""
    assert short.stderr.strip() == ("wxpush console: the password must have at least 8 "
                                    "characters")


@pytest.mark.slow
def test_demo_keeps_running_with_the_console_and_an_answer_reaches_the_customer(tmp_path):
    import os
    import re

    import requests

    demo = subprocess.Popen([sys.executable, "-m", "webhook.cli", "demo", "--keep-running"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(line.startswith("The server keeps running") for line in lines):
            line = demo.stdout.readline()
            assert line, demo.stderr.read()
            lines.append(line)
        found = re.search(r"console  (\S+)   operator demo, password (\S+) \(this run only\)",
                          "".join(lines))
        url, password = found.groups()
        with requests.Session() as browser:
            form = browser.get(url + "login", timeout=10)
            token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            browser.post(url + "login", data={"csrf": token, "name": "demo",
                                              "password": password}, timeout=10)
            flagged = browser.get(url + "needs-human", timeout=10).text
            assert "hand-off rule fired" in flagged
            customer = re.search(r'href="(/console/conversations/[^"]+)"', flagged).group(1)
            page = browser.get(url.removesuffix("/console/") + customer, timeout=10).text
            assert "几点开门？" in page and "转人工" in page
            csrf = re.search(r'<meta name="csrf" content="([^"]+)"', page).group(1)
            answer = browser.post(url.removesuffix("/console/") + customer + "/reply",
                                  data={"csrf": csrf, "text": "您好，我是店员"}, timeout=10)
            assert answer.ok
        line = demo.stdout.readline()
        while line and not line.startswith("business"):   # the rest of the instructions
            line = demo.stdout.readline()
        assert line == "business  您好，我是店员\n"
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=30)
    assert demo.returncode == 0


@pytest.mark.parametrize("senders, processes, split", [
    (128, 2, [64, 64]), (5, 2, [3, 2]), (1, 2, [1, 0]), (0, 3, [0, 0, 0]), (7, 1, [7])])
def test_serve_splits_the_sends_in_flight_between_its_delivery_processes(senders, processes,
                                                                          split):
    from webhook.cli.deliver import shares

    assert shares(senders, processes) == split
