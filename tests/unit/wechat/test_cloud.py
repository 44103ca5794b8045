"""webhook.wechat.cloud against the emulator served on 127.0.0.1: functions, the database,
storage in two steps, download links and deletion, and the cloud errors."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from webhook.cloudquery import collection, gt
from webhook.config.settings import AppConfig
from webhook.errors import (CloudNotFound, ConfigError, FunctionFailed, FunctionTimedOut,
                            Permanent, TimedOut)
from webhook.store.sqlite import SqliteStore
from webhook.testing import Emulator, FakeClock, serve
from webhook.testing.emulator.cloud import DEMO_COLLECTIONS, DEMO_FUNCTIONS, RawResult
from webhook.wechat.client import WeChatClient
from webhook.wechat.cloud import Cloud, Updated
from webhook.wechat.tokens import TokenProvider

APPID, SECRET, ENV = "wxcloud0123456789", "secret-cloud", "prod-4gxyz"
BARE = "wxbare0123456789a"
APPS = {APPID: AppConfig(appid=APPID, token="t", secret=SECRET, cloud_env=ENV),
        BARE: AppConfig(appid=BARE, token="t", secret="bare")}


@pytest.fixture
def emulator() -> Emulator:
    emu = Emulator(clock=FakeClock(), seed=3)
    emu.register_app(APPID, SECRET)
    emu.register_app(BARE, "bare")
    emu.add_cloud_env(APPID, ENV, functions=DEMO_FUNCTIONS, collections=DEMO_COLLECTIONS)
    return emu


@pytest.fixture
def cloud(emulator, tmp_path) -> Iterator[Cloud]:
    store = SqliteStore(str(tmp_path / "store.db"))
    with serve(emulator.app) as running, requests.Session() as session:
        client = WeChatClient(running.url, session=session)
        yield Cloud(client, TokenProvider(store, client, APPS))
    store.close()


def test_a_function_answers_its_parsed_result_with_the_data_as_its_event(cloud, emulator):
    assert cloud.call_function(APPID, "orderStatus", {"order": "123457"}) == \
        {"order": "123457", "status": "已发货", "eta": "明天"}
    call = emulator.calls("/tcb/invokecloudfunction")[0]
    assert call.params == {"env": ENV, "name": "orderStatus"}
    assert call.body == {"order": "123457"}


def test_function_failures_are_the_cloud_errors(cloud, emulator):
    with pytest.raises(FunctionFailed, match="no order 123450"):
        cloud.call_function(APPID, "orderStatus", {"order": "123450"})
    emulator.add_cloud_env(APPID, ENV, functions={"raw": lambda e: RawResult("<html>")})
    with pytest.raises(FunctionFailed, match="not JSON"):
        cloud.call_function(APPID, "raw")
    with pytest.raises(CloudNotFound) as missing:
        cloud.call_function(APPID, "nope")
    assert missing.value.what == "function"
    with pytest.raises(CloudNotFound) as no_env:
        cloud.call_function(APPID, "orderStatus", env="test-0000")
    assert no_env.value.what == "environment"
    with pytest.raises(ConfigError, match="no cloud_env"):
        cloud.call_function(BARE, "orderStatus")


def test_a_function_cut_off_at_the_limit_times_out(cloud, emulator):
    emulator.function_limit = 0.2
    emulator.add_cloud_env(APPID, ENV, functions={"slow": lambda e: time.sleep(1.0)})
    started = time.monotonic()
    with pytest.raises(FunctionTimedOut):
        cloud.call_function(APPID, "slow")
    assert time.monotonic() - started < 0.9


def test_a_function_whose_answer_never_comes_times_out(cloud, emulator):
    emulator.set_faults(delay_rate=1.0, delay_seconds=1.0, paths=("/tcb/invokecloudfunction",))
    cloud.function_wait = 0.3
    with pytest.raises(FunctionTimedOut, match="no answer"):
        cloud.call_function(APPID, "orderStatus", {"order": "1"})


def test_the_database_round_trip(cloud, emulator):
    faq = collection("faq")
    assert cloud.database(APPID, faq.where({"key": "shipping"}).limit(1).get())[0]["answer"] \
        .startswith("满 99 元")
    ids = cloud.database(APPID, faq.add([{"key": "hours", "n": 3},
                                         {"key": "x'\"); db.y(", "n": 9}]))
    assert len(ids) == 2
    assert cloud.database(APPID, faq.where({"n": gt(2)}).count()) == 2
    assert cloud.database(APPID, faq.where({"key": "x'\"); db.y("}).get())[0]["n"] == 9
    assert cloud.database(APPID, faq.doc(ids[0]).update({"n": 4})) == Updated(1, 1)
    assert cloud.database(APPID, faq.where({"n": gt(3)}).remove()) == 2
    assert [r["key"] for r in emulator.collection(ENV, "faq")] == ["shipping", "returns"]
    assert emulator.calls("/tcb/databasequery")[0].body == {
        "env": ENV, "query": 'db.collection("faq").where({"key":"shipping"}).limit(1).get()'}


def test_a_missing_collection_is_permanent(cloud):
    with pytest.raises(Permanent) as refused:
        cloud.database(APPID, collection("nope").get())
    assert refused.value.errcode == -502005


def test_upload_in_two_steps_then_links_that_expire(cloud, emulator):
    file_id = cloud.upload(APPID, "public/menu.png", b"\x89PNG menu")
    assert file_id == f"cloud://{ENV}.7072-{ENV}/public/menu.png"
    assert emulator.cloud_file(ENV, "public/menu.png") == b"\x89PNG menu"
    step_two = emulator.calls()[-1]
    assert list(step_two.body) == ["key", "Signature", "x-cos-security-token",
                                   "x-cos-meta-fileid", "file"]
    link, missing = cloud.download_links(APPID, [file_id, file_id + "x"], max_age=60)
    assert (link.status, missing.status) == (0, -1) and missing.url == ""
    assert requests.get(link.url, timeout=5).content == b"\x89PNG menu"
    emulator.advance(61)
    assert requests.get(link.url, timeout=5).status_code == 403


def test_storage_refuses_a_form_whose_file_part_is_not_last(cloud, emulator):
    target = cloud._call(APPID, lambda token: cloud.client.tcb(
        "uploadfile", access_token=token, payload={"env": ENV, "path": "a.txt"}))
    form = [("key", (None, "a.txt")), ("file", ("a.txt", b"data")),
            ("Signature", (None, target["authorization"])),
            ("x-cos-security-token", (None, target["token"])),
            ("x-cos-meta-fileid", (None, target["cos_file_id"]))]
    with pytest.raises(Permanent, match="HTTP 400"):
        cloud._store(target["url"], form)
    assert emulator.cloud_file(ENV, "a.txt") is None


def test_a_token_fetch_that_times_out_is_no_function_timeout(emulator, tmp_path):
    emulator.set_faults(delay_rate=1.0, delay_seconds=1.0, paths=("/cgi-bin/stable_token",))
    store = SqliteStore(str(tmp_path / "slow.db"))
    with serve(emulator.app) as running, requests.Session() as session:
        client = WeChatClient(running.url, session=session, token_timeout=(0.3, 0.3))
        cloud = Cloud(client, TokenProvider(store, client, APPS))
        with pytest.raises(TimedOut) as timed_out:
            cloud.call_function(APPID, "orderStatus", {"order": "1"})
    store.close()
    assert not isinstance(timed_out.value, FunctionTimedOut)
    assert emulator.calls("/tcb/invokecloudfunction") == []
