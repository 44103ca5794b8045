"""The emulator's cloud: environments per app, functions cut off at the limit and run outside
the lock, statements it does not read refused loudly, the control plane and
``wxpush emulator --cloud``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from webhook.testing import Emulator, EmulatorControl, FakeClock, serve
from webhook.testing.emulator.cloud import DEMO_COLLECTIONS, DEMO_FUNCTIONS

APPID, SECRET, ENV = "wx0000000000000001", "s3cret", "prod-1"
OTHER, OTHER_SECRET = "wx0000000000000002", "other"


@pytest.fixture
def running():
    emulator = Emulator(clock=FakeClock(), seed=5)
    emulator.register_app(APPID, SECRET)
    emulator.register_app(OTHER, OTHER_SECRET)
    emulator.add_cloud_env(APPID, ENV, functions=DEMO_FUNCTIONS, collections=DEMO_COLLECTIONS)
    with serve(emulator.app) as server, requests.Session() as http:
        yield emulator, server.url, http


def token(http, url, appid, secret) -> str:
    return http.post(f"{url}/cgi-bin/stable_token", json={
        "grant_type": "client_credential", "appid": appid, "secret": secret}, timeout=5
    ).json()["access_token"]


def tcb(http, url, access_token, action, body, **params):
    return http.post(f"{url}/tcb/{action}", params={"access_token": access_token, **params},
                     json=body, timeout=10).json()


def test_an_environment_serves_only_its_own_app(running):
    emulator, url, http = running
    mine, theirs = token(http, url, APPID, SECRET), token(http, url, OTHER, OTHER_SECRET)
    query = {"env": ENV, "query": 'db.collection("faq").count()'}
    assert tcb(http, url, mine, "databasecount", query)["count"] == 2
    assert tcb(http, url, theirs, "databasecount", query)["errcode"] == -501000
    assert tcb(http, url, mine, "databasecount", {"query": query["query"]})["errcode"] == 40101


@pytest.mark.parametrize("statement", [
    'db.collection("faq").where({key:"shipping"}).get()',          # what a person might write
    'db.collection("faq").where({"key":"shipping"}).field({"answer":true}).get()',
    'db.collection("faq").get(); db.collection("faq").remove()',
])
def test_a_statement_the_builder_does_not_write_is_refused_loudly(running, statement):
    emulator, url, http = running
    answer = tcb(http, url, token(http, url, APPID, SECRET), "databasequery",
                 {"env": ENV, "query": statement})
    assert answer["errcode"] == 40097 and "does not read this query: column" in answer["errmsg"]
    assert len(emulator.collection(ENV, "faq")) == 2


def test_a_statement_sent_to_another_api_is_refused(running):
    emulator, url, http = running
    answer = tcb(http, url, token(http, url, APPID, SECRET), "databasequery",
                 {"env": ENV, "query": 'db.collection("faq").where({"key":"x"}).remove()'})
    assert answer["errcode"] == 40097 and len(emulator.collection(ENV, "faq")) == 2


def test_queries_order_page_and_compare(running):
    emulator, url, http = running
    emulator.add_cloud_env(APPID, ENV, collections={"n": [
        {"v": 3, "tag": ["a", "b"]}, {"v": 1}, {"v": "x"}, {"w": 1}, {"v": 2, "o": {"k": True}}]})
    access = token(http, url, APPID, SECRET)

    def values(statement):
        answer = tcb(http, url, access, "databasequery", {"env": ENV, "query": statement})
        return [json.loads(r).get("v") for r in answer["data"]], answer["pager"]

    assert values('db.collection("n").orderBy("v","asc").skip(1).limit(2).get()') == \
        ([2, 3], {"Offset": 1, "Limit": 2, "Total": 5})
    assert values('db.collection("n").where({"v":db.command.gte(2)}).get()')[0] == [3, 2]
    assert values('db.collection("n").where({"tag":"b"}).get()')[0] == [3]
    assert values('db.collection("n").where({"o":{"k":true}}).get()')[0] == [2]
    assert values('db.collection("n").where({"o.k":1}).get()')[0] == []      # true is not 1
    assert values('db.collection("n").where({"v":db.command.in([1,"x"])}).get()')[0] == [1, "x"]


def test_a_slow_function_holds_up_no_other_call(running):
    emulator, url, http = running
    emulator.function_limit = 2.0
    release = threading.Event()
    emulator.add_cloud_env(APPID, ENV, functions={"slow": lambda e: release.wait(1.5) or {}})
    access = token(http, url, APPID, SECRET)
    slow = threading.Thread(target=tcb, args=(http, url, access, "invokecloudfunction", {}),
                            kwargs={"env": ENV, "name": "slow"})
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    with requests.Session() as other:
        answer = tcb(other, url, access, "invokecloudfunction", {"order": "1"}, env=ENV,
                     name="orderStatus")
    assert time.monotonic() - started < 0.5 and answer["errcode"] == 0
    release.set()
    slow.join()


def test_the_control_plane_makes_demo_environments(running):
    emulator, url, http = running
    with EmulatorControl(url) as control:
        control.add_cloud_env(OTHER, "other-1", demo=True, collections={"x": [{"a": 1}]})
    assert emulator.collection("other-1", "x")[0]["a"] == 1
    assert [r["key"] for r in emulator.collection("other-1", "faq")] == ["shipping", "returns"]
    with pytest.raises(ValueError, match="belongs to"):
        emulator.add_cloud_env(APPID, "other-1")


@pytest.mark.slow
def test_wxpush_emulator_cloud_serves_the_demo_function():
    code = "import sys; from webhook.cli import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "emulator", "--app", f"{APPID}:{SECRET}",
         "--cloud", f"{APPID}:{ENV}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        line = proc.stdout.readline()
        assert line.startswith("wxpush emulator listening on"), line + proc.stderr.read()
        url = line.split()[-1]
        with requests.Session() as http:
            answer = tcb(http, url, token(http, url, APPID, SECRET), "invokecloudfunction",
                         {"order": "123457"}, env=ENV, name="orderStatus")
        assert json.loads(answer["resp_data"])["status"] == "已发货"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_wxpush_emulator_cloud_needs_a_registered_app(capsys):
    from webhook.cli import main

    assert main(["emulator", "--cloud", f"{APPID}:{ENV}"]) == 2
    assert "register the app with --app first" in capsys.readouterr().err
