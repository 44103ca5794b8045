"""The delivery process's sends against the emulator and a real store, as WeChat's latency
makes them: many in flight at once, never more than ``senders``, never two to one customer,
and fewer while WeChat answers with passing errors."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from webhook.config.settings import AppConfig, load
from webhook.delivery.background import Background
from webhook.delivery.handling import Responder
from webhook.delivery.sender import Sender
from webhook.errors import StoreError
from webhook.routing.router import Router
from webhook.server.app import parts
from webhook.store import NewReply, Store
from webhook.testing import Emulator, serve
from webhook.wechat.api import WeChatAPI
from webhook.wechat.client import WeChatClient
from webhook.wechat.tokens import TokenProvider

APPID, SECRET = "wxsends0123456789", "secret-sends"
SEND = "/cgi-bin/message/custom/send"


@pytest.fixture
def emulator() -> Emulator:
    emu = Emulator()
    emu.register_app(APPID, SECRET)
    return emu


@pytest.fixture
def api(store, emulator) -> Iterator[WeChatAPI]:
    with serve(emulator.app) as running, requests.Session() as http:
        client = WeChatClient(running.url, session=http)
        tokens = TokenProvider(store, client, {APPID: AppConfig(APPID, "t", SECRET)})
        yield WeChatAPI(client, tokens, store)


def background(store: Store, api: WeChatAPI, *, senders: int) -> Background:
    sender = Sender(store=store, api=api, owner="w", clock=store.clock, rng=random.Random(1),
                    lease=30, max_attempts=100, base_delay=0.02, max_delay=0.05)
    responder = Responder(store=store, router=Router, owner="w", clock=store.clock, budget=3)
    return Background(store=store, responder=responder, sender=sender, owner="w", lease=30,
                      senders=senders, poll=0.02)


def queue(store: Store, emulator: Emulator, customers: int, each: int = 1) -> None:
    """``each`` text replies to each of ``customers`` customers, their windows open."""
    for c in range(customers):
        emulator.notify_push(APPID, {"FromUserName": f"o-{c}", "MsgType": "text"})
    store.outbox_add([NewReply(APPID, f"o-{c}", json.dumps(
        {"msgtype": "text", "text": {"content": f"{c}:{n}"}})) for n in range(each)
        for c in range(customers)])


def watch(until: Callable[[], bool], *readings: Callable[[], int],
          tick: Callable[[], object] = lambda: None, timeout: float = 20.0) -> list[int]:
    """The highest value of each reading, read every few ms (calling ``tick``) until
    ``until()``."""
    highest = [0] * len(readings)
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        highest = [max(h, read()) for h, read in zip(highest, readings)]
        tick()
        time.sleep(0.003)
    return highest


def sent(emulator: Emulator) -> list[str]:
    return [c.body["text"]["content"] for c in emulator.calls(SEND) if c.errcode == 0]


def test_sends_go_out_together_up_to_senders_and_only_that_many_are_claimed(
        store, api, emulator):
    """Each send waits 0.2 s for WeChat: 24 replies go out 8 at a time, and no row is
    claimed before a send can start for it (a claimed row waiting in a queue would have its
    lease run out and be sent twice)."""
    emulator.set_faults(latency=0.2)
    queue(store, emulator, 24)
    work = background(store, api, senders=8)
    work.start()
    try:
        in_flight, claimed = watch(lambda: len(sent(emulator)) == 24,
                                   lambda: emulator.in_flight(SEND),
                                   lambda: store.outbox_stats()["sending"])
    finally:
        work.stop()
    assert in_flight == 8 and claimed <= 8
    assert store.outbox_stats()["sent"] == 24


def test_each_customer_gets_one_send_at_a_time_in_the_order_queued(store, api, emulator):
    emulator.set_faults(latency=0.05)
    queue(store, emulator, customers=3, each=4)
    work = background(store, api, senders=16)
    work.start()
    try:
        [in_flight] = watch(lambda: len(sent(emulator)) == 12, lambda: emulator.in_flight(SEND))
    finally:
        work.stop()
    assert in_flight <= 3
    for c in range(3):
        assert [t for t in sent(emulator) if t.startswith(f"{c}:")] == [f"{c}:{n}"
                                                                          for n in range(4)]


def test_a_busy_wechat_gets_fewer_sends_at_once_and_all_of_them_once_it_recovers(
        store, api, emulator, clock):
    """Every send answered -1 (system busy): instead of 16 at a time the process backs off
    to one; once WeChat answers again, every reply goes out."""
    emulator.set_faults(latency=0.05, errcode_rate=1.0, paths=(SEND,))
    queue(store, emulator, 16)
    work = background(store, api, senders=16)
    later = lambda: clock.advance(0.1)   # noqa: E731  (retries come due)
    work.start()
    try:
        watch(lambda: len(emulator.calls(SEND)) >= 40, tick=later)
        [busy] = watch(lambda: len(emulator.calls(SEND)) >= 60,
                       lambda: emulator.in_flight(SEND), tick=later)
        emulator.set_faults(latency=0.05)
        watch(lambda: len(sent(emulator)) == 16, tick=later)
    finally:
        work.stop()
    assert busy <= 2
    assert store.outbox_stats()["sent"] == 16


def test_senders_0_sends_nothing(store, api, emulator):
    queue(store, emulator, 2)
    work = background(store, api, senders=0)
    work.start()
    try:
        time.sleep(0.2)
    finally:
        work.stop()
    assert emulator.calls(SEND) == [] and store.outbox_stats()["pending"] == 2
    assert not any(t.name.startswith("wxpush-send") for t in threading.enumerate())


def test_the_connections_to_wechat_stay_open_one_per_send_in_flight(store, emulator, tmp_path):
    """The client the process builds from its config keeps as many connections alive as it
    has sends in flight: none is closed after its send and opened again for the next (a TLS
    handshake each, at WeChat)."""
    emulator.set_faults(latency=0.1)
    queue(store, emulator, 144)
    with serve(emulator.app) as running:
        config = tmp_path / "wxpush.toml"
        config.write_text(
            f'[server]\napi_base = "{running.url}"\nstore = "sqlite:///{tmp_path / "w.db"}"\n'
            f'senders = 48\n[[apps]]\nappid = "{APPID}"\nsecret = "{SECRET}"\ntoken = "t"\n'
            'mode = "plaintext"\n', encoding="utf-8")
        settings = load(str(config))
        own_store, built, _ = parts(settings)
        own_store.close()
        api = WeChatAPI(built.client, TokenProvider(store, built.client, settings.apps), store)
        work = background(store, api, senders=settings.server.senders)
        work.start()
        try:
            watch(lambda: len(sent(emulator)) == 144)
        finally:
            work.stop()
        opened = running.connections
    assert 0 < opened <= 48


class MarksFail:
    """The store, whose first ``failures`` marks of a sent reply fail (a full disk)."""

    def __init__(self, store: Store, failures: int) -> None:
        self.store, self.failures = store, failures

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def outbox_sent(self, row_id: str, **kwargs) -> bool:
        if self.failures:
            self.failures -= 1
            raise StoreError("database or disk is full")
        return self.store.outbox_sent(row_id, **kwargs)


def test_a_reply_whose_mark_fails_is_logged_and_sent_again_once_its_lease_runs_out(
        store, api, emulator, clock, caplog):
    """The one duplicate a store failure can cause: WeChat took the reply, the mark did not
    go through, so the row is still the process's until its lease (30 s) runs out."""
    queue(store, emulator, 1)
    failing = MarksFail(store, failures=1)
    work = background(failing, api, senders=4)
    work.start()
    try:
        watch(lambda: len(sent(emulator)) == 1)
        assert store.outbox_stats()["sending"] == 1
        watch(lambda: store.outbox_stats()["sent"] == 1, tick=lambda: clock.advance(1))
    finally:
        work.stop()
    assert sent(emulator) == ["0:0", "0:0"]
    [line] = [r.getMessage() for r in caplog.records if "send failed" in r.getMessage()]
    assert "error=StoreError" in line and "claimed again when its lease runs out" in line
