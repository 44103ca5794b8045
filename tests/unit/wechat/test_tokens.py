"""TokenProvider on both stores: single flight, refresh ahead, invalidate-if-equal, backoff,
force limits. Upstream is a tiny fake with WeChat's token semantics; the multi-process and
emulator tests live in test_api.py."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from webhook.config.settings import AppConfig
from webhook.errors import Permanent, Retryable, TokenInvalid, UnknownApp
from webhook.wechat.client import TokenGrant
from webhook.wechat.tokens import FORCE_PER_DAY, REFUSED_GAP, TokenProvider

APPS = {"wxA": AppConfig(appid="wxA", token="t", secret="S"),
        "wxB": AppConfig(appid="wxB", token="t", secret="S")}


class FakeWeChat:
    """/cgi-bin/token rotates on every fetch; stable_token keeps its token until 5 min before
    expiry unless forced (docs/protocol.md §6). ``failures`` are raised by the next fetches."""

    def __init__(self, clock, delay: float = 0.0) -> None:
        self.clock, self.delay = clock, delay
        self.fetches: Counter[str] = Counter()
        self.failures: list[Exception] = []
        self.issued = 0
        self.current: tuple[str, float] | None = None
        self.lock = threading.Lock()

    def _begin(self, kind: str) -> None:
        with self.lock:
            self.fetches[kind] += 1
            if self.failures:
                raise self.failures.pop(0)
        time.sleep(self.delay)

    def token(self, *, appid: str, secret: str) -> TokenGrant:
        self._begin("token")
        with self.lock:
            self.issued += 1
            return TokenGrant(f"T{self.issued}", 7200)

    def stable_token(self, *, appid: str, secret: str, force_refresh: bool = False) -> TokenGrant:
        self._begin("forced" if force_refresh else "stable")
        with self.lock:
            now = self.clock()
            if force_refresh or self.current is None or now >= self.current[1] - 300:
                self.issued += 1
                self.current = (f"S{self.issued}", now + 7200)
            return TokenGrant(self.current[0], int(self.current[1] - now))


@pytest.fixture
def upstream(clock) -> FakeWeChat:
    return FakeWeChat(clock)


def provider(store, upstream, clock, *, endpoint="stable", **kw) -> TokenProvider:
    """A provider whose sleep moves the fake clock (waiting is instant and deterministic)."""
    import random
    kw.setdefault("sleep", clock.advance)
    return TokenProvider(store, upstream, APPS, endpoint=endpoint, clock=clock,
                         random=random.Random(7), **kw)


@pytest.mark.parametrize("endpoint", ["stable", "classic"])
def test_cold_cache_many_threads_fetch_once(store, clock, endpoint):
    upstream = FakeWeChat(clock, delay=0.05)
    tokens = provider(store, upstream, clock, endpoint=endpoint, sleep=time.sleep, poll=0.005)
    seen: list[str] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            seen.append(tokens.call("wxA", lambda token: token))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(upstream.fetches.values()) == 1
    assert len(seen) == 400 and len(set(seen)) == 1


def test_cached_then_refreshed_ahead_of_expiry(store, upstream, clock):
    tokens = provider(store, upstream, clock, endpoint="classic", refresh_ahead=300)
    assert tokens.get("wxA") == "T1"
    info = tokens.info("wxA")
    assert info.expires_at == clock() + 7200
    assert clock() + 7200 - 300 - 60 <= info.refresh_at <= clock() + 7200 - 300
    clock.advance(info.refresh_at - clock() - 1)
    assert tokens.get("wxA") == "T1" and upstream.fetches["token"] == 1
    clock.advance(2)
    assert tokens.get("wxA") == "T2" and upstream.fetches["token"] == 2
    assert tokens.get("wxB") == "T3"   # apps are separate


def test_stable_same_token_early_is_not_a_hot_loop(store, upstream, clock):
    tokens = provider(store, upstream, clock, refresh_ahead=600)
    assert tokens.get("wxA") == "S1"
    clock.advance(7200 - 700)       # our refresh point, before WeChat rotates (last 300 s)
    for _ in range(430):            # one call a second, past WeChat's rotation
        tokens.get("wxA")
        clock.advance(1)
    assert tokens.get("wxA") == "S2"
    # re-asked every 30 s while WeChat hands back the same token, not on every call
    assert upstream.fetches["stable"] <= 2 + 430 // 30 and upstream.fetches["forced"] == 0


def test_during_someone_elses_refresh_the_old_token_is_used(store, upstream, clock):
    tokens = provider(store, upstream, clock, endpoint="classic")
    tokens.get("wxA")
    clock.advance(7200 - 100)
    assert store.acquire("token:wxA", "other-host", lease=10)
    assert tokens.get("wxA") == "T1" and upstream.fetches["token"] == 1


def test_waiter_takes_over_when_the_lock_holder_died(store, upstream, clock):
    tokens = provider(store, upstream, clock, lease=10, wait=12)
    assert store.acquire("token:wxA", "dead-process", lease=10)
    assert tokens.get("wxA") == "S1"
    assert upstream.fetches["stable"] == 1 and clock.now >= 1_700_000_010 - 1


def test_waiter_gives_up_after_its_budget(store, upstream, clock):
    tokens = provider(store, upstream, clock, lease=10, wait=3)
    assert store.acquire("token:wxA", "slow-process", lease=10)
    with pytest.raises(Retryable, match="timed out"):
        tokens.get("wxA")
    assert upstream.fetches["stable"] == 0


def test_token_invalid_refreshes_once_and_retries_once(store, upstream, clock):
    tokens = provider(store, upstream, clock, endpoint="classic")
    used: list[str] = []

    def send(token: str) -> str:
        used.append(token)
        if token == "T1":
            raise TokenInvalid(40001, "invalid credential")
        return "sent"

    assert tokens.call("wxA", send) == "sent"
    assert used == ["T1", "T2"] and upstream.fetches["token"] == 2
    assert tokens.peek("wxA") == "T2"


def test_invalidate_only_if_the_cached_token_is_the_one_that_failed(store, upstream, clock):
    here = provider(store, upstream, clock, endpoint="classic")
    elsewhere = provider(store, upstream, clock, endpoint="classic")
    used: list[str] = []

    def send(token: str) -> None:
        used.append(token)
        if token == "T1":
            elsewhere.refresh("wxA")     # another process already replaced T1 with T2
            raise TokenInvalid(40001, "invalid credential")

    here.call("wxA", send)
    assert used == ["T1", "T2"] and upstream.fetches["token"] == 2
    assert here.peek("wxA") == "T2"      # T2 was not thrown away


def test_stable_40001_forces_only_if_normal_fetch_returns_the_failed_token(store, upstream,
                                                                           clock):
    tokens = provider(store, upstream, clock)
    bad = tokens.get("wxA")

    def send(token: str) -> str:
        if token == bad:
            raise TokenInvalid(40001, "invalid credential")
        return token

    assert tokens.call("wxA", send) == "S2"
    assert upstream.fetches == Counter(stable=2, forced=1)
    clock.advance(10)    # S2 refused as well, but 30 s have not passed: no second force
    with pytest.raises(Retryable) as caught:
        tokens.call("wxA", lambda token: (_ for _ in ()).throw(TokenInvalid(40001, "x")))
    assert caught.value.errcode == 40001 and upstream.fetches["forced"] == 1


def test_second_refusal_is_retryable_not_token_invalid(store, upstream, clock):
    tokens = provider(store, upstream, clock, endpoint="classic")
    calls = []

    def refuse(token: str) -> None:
        calls.append(token)
        raise TokenInvalid(42001, "access_token expired")

    with pytest.raises(Retryable) as caught:
        tokens.call("wxA", refuse)
    assert caught.value.errcode == 42001 and calls == ["T1", "T2"]


def test_failed_refresh_keeps_old_token_and_backs_off(store, upstream, clock):
    tokens = provider(store, upstream, clock, endpoint="classic")
    tokens.get("wxA")
    clock.advance(7200 - 200)
    upstream.failures = [Retryable(-1, "system error")] * 3
    assert tokens.get("wxA") == "T1"
    assert tokens.get("wxA") == "T1" and upstream.fetches["token"] == 2   # backing off
    clock.advance(1.01)     # first backoff is 1-2 s
    clock.advance(1)
    assert tokens.get("wxA") == "T1" and upstream.fetches["token"] == 3
    clock.advance(4)
    assert tokens.get("wxA") == "T1" and upstream.fetches["token"] == 4
    clock.advance(8)
    assert tokens.get("wxA") == "T2" and upstream.fetches["token"] == 5
    assert store.get("token-backoff:wxA") is None


def test_failed_refresh_after_expiry_raises(store, upstream, clock):
    tokens = provider(store, upstream, clock)
    tokens.get("wxA")
    clock.advance(7200)
    upstream.failures = [Retryable(45011, "minute quota")]
    with pytest.raises(Retryable):
        tokens.get("wxA")
    with pytest.raises(Retryable) as caught:   # backing off: WeChat is not asked again
        tokens.get("wxA")
    assert caught.value.errcode == 45011 and upstream.fetches["stable"] == 2


def test_refused_secret_is_permanent_not_token_invalid(store, upstream, clock):
    tokens = provider(store, upstream, clock, endpoint="classic")
    upstream.failures = [TokenInvalid(40001, "invalid credential")]
    with pytest.raises(Permanent) as caught:
        tokens.call("wxA", lambda token: token)
    assert caught.value.errcode == 40001 and upstream.fetches["token"] == 1


def test_force_refresh_limits(store, upstream, clock):
    tokens = provider(store, upstream, clock)
    tokens.refresh("wxA", force=True)
    with pytest.raises(Retryable, match="force refresh refused"):
        tokens.refresh("wxA", force=True)            # < 30 s apart
    for _ in range(FORCE_PER_DAY - 1):
        clock.advance(31)
        tokens.refresh("wxA", force=True)
    clock.advance(3600)
    with pytest.raises(Retryable, match="force refresh refused"):
        tokens.refresh("wxA", force=True)            # 20 in 24 h
    assert upstream.fetches["forced"] == FORCE_PER_DAY
    clock.advance(86400)
    tokens.refresh("wxA", force=True)
    assert upstream.fetches["forced"] == FORCE_PER_DAY + 1


def test_limits_are_shared_through_the_store(store, upstream, clock):
    provider(store, upstream, clock).refresh("wxA", force=True)
    with pytest.raises(Retryable, match="force refresh refused"):
        provider(store, upstream, clock).refresh("wxA", force=True)


def test_info_and_unknown_app(store, upstream, clock):
    tokens = provider(store, upstream, clock)
    assert tokens.info("wxA") is None and tokens.peek("wxA") is None
    token = tokens.get("wxA")
    info = tokens.info("wxA")
    assert token not in repr(info) and len(info.fingerprint) == 12
    with pytest.raises(UnknownApp):
        tokens.get("wxZ")


def test_unreadable_cache_entry_is_refetched(store, upstream, clock):
    store.put("token:wxA", "{not json")
    assert provider(store, upstream, clock).get("wxA") == "S1"


@pytest.mark.parametrize("endpoint", ["stable", "classic"])
def test_a_refusal_that_persists_refreshes_at_most_once_a_minute(store, upstream, clock,
                                                                 endpoint):
    tokens = provider(store, upstream, clock, endpoint=endpoint)
    other_process = provider(store, upstream, clock, endpoint=endpoint)
    tokens.get("wxA")
    accepted: set[str] = set()

    def send(token: str) -> str:
        if token not in accepted:
            raise TokenInvalid(40001, "invalid credential")
        return token

    for n in range(50):                       # 50 failed sends in 20 s, from two processes
        with pytest.raises(Retryable) as caught:
            (tokens if n % 2 else other_process).call("wxA", send)
        assert caught.value.errcode == 40001
        clock.advance(0.4)
    # the first fetch, then one refresh (stable: a normal fetch handing back the refused
    # token, then a forced one)
    assert sum(upstream.fetches.values()) <= 3, upstream.fetches
    clock.advance(REFUSED_GAP)                # WeChat takes tokens again: the next call
    accepted.add(tokens.peek("wxA"))          # with the cached one goes through at once
    assert tokens.call("wxA", send) in accepted
    assert sum(upstream.fetches.values()) <= 3


def test_a_token_replaced_elsewhere_is_retried_inside_the_gap(store, upstream, clock):
    tokens = provider(store, upstream, clock, endpoint="classic")
    first = tokens.get("wxA")
    tokens.call("wxA", lambda token: (_ for _ in ()).throw(TokenInvalid(40001, "x"))
                if token == first else token)        # refused: the gap's refresh, T2
    second = tokens.get("wxA")
    provider(store, upstream, clock, endpoint="classic").refresh("wxA")   # T3, elsewhere
    # T2 refused inside the gap: no refresh of ours, but T3 is already there to retry with
    assert tokens.call("wxA", lambda token: (_ for _ in ()).throw(TokenInvalid(40001, "x"))
                       if token == second else token) == "T3"
    assert upstream.fetches["token"] == 3


def test_a_process_reads_its_token_from_the_store_once_a_second(store, upstream, clock):
    """A send reads no store for the token; a token replaced elsewhere is used here within
    a second, and one refused is never taken from memory again."""
    reads = Counter()

    class Counting:
        def __getattr__(self, name):
            return getattr(store, name)

        def get(self, key):
            reads[key] += 1
            return store.get(key)

    here = provider(Counting(), upstream, clock, endpoint="classic")
    assert here.get("wxA") == "T1"                          # fetched
    reads.clear()
    assert [here.get("wxA") for _ in range(50)] == ["T1"] * 50
    assert reads["token:wxA"] == 1
    provider(store, upstream, clock, endpoint="classic").refresh("wxA")     # T2, elsewhere
    assert here.get("wxA") == "T1"                          # still valid for 5 minutes
    clock.advance(1.0)
    assert here.get("wxA") == "T2"
    provider(store, upstream, clock, endpoint="classic").refresh("wxA")     # T3, elsewhere
    assert here.current("wxA")[0] == "T3"                   # the token service reads afresh
    used = []

    def send(token: str) -> str:
        used.append(token)
        if token == "T3":
            raise TokenInvalid(40001, "invalid credential")
        return "sent"

    assert here.call("wxA", send) == "sent" and used == ["T3", "T4"]
    assert here.get("wxA") == "T4"
