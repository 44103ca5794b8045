"""Token buckets (a fake clock), the client address behind trusted proxies, and the limiter
on both stores."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.ratelimit import (RATE_LIMITED, Bucket, Limiter, RateLimited, client_address,
                               take, trusted_networks)
from webhook.store.base import Store

LOOPBACK = trusted_networks(["127.0.0.1", "::1"])


# -- the bucket ------------------------------------------------------------------------------

def test_a_full_bucket_allows_its_burst_then_refuses():
    bucket, state, now = Bucket(rate=2.0, burst=3), None, 1000.0
    for _ in range(3):
        state, wait = take(state, now, bucket)
        assert wait == 0.0
    refused, wait = take(state, now, bucket)
    assert refused is None and wait == pytest.approx(0.5)


def test_tokens_come_back_at_the_rate_up_to_the_burst():
    bucket = Bucket(rate=0.5, burst=2)
    state = take(take(None, 1000.0, bucket)[0], 1000.0, bucket)[0]
    assert take(state, 1001.0, bucket) == (None, pytest.approx(1.0))   # half a token
    state, wait = take(state, 1002.0, bucket)
    assert wait == 0.0
    state = take(state, 2000.0, bucket)[0]          # long idle: full again, not more
    state = take(state, 2000.0, bucket)[0]
    assert take(state, 2000.0, bucket)[0] is None


def test_a_clock_going_back_adds_no_tokens():
    bucket = Bucket(rate=1.0, burst=1)
    state = take(None, 1000.0, bucket)[0]
    assert take(state, 990.0, bucket)[0] is None
    assert take(state, 1001.0, bucket)[1] == 0.0


def test_ttl_is_the_time_to_fill_an_empty_bucket():
    assert Bucket(rate=0.5, burst=10).ttl == 20.0


# -- the client address ----------------------------------------------------------------------

@pytest.mark.parametrize("peer, forwarded, client", [
    ("203.0.113.7", None, "203.0.113.7"),
    ("203.0.113.7", "198.51.100.1", "203.0.113.7"),            # not a proxy: header ignored
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "198.51.100.1", "198.51.100.1"),             # nginx on loopback
    ("127.0.0.1", "10.9.9.9, 1.2.3.4, 198.51.100.1", "198.51.100.1"),   # spoofed left part
    ("127.0.0.1", "198.51.100.1, 127.0.0.1", "198.51.100.1"),  # two proxies on this host
    ("127.0.0.1", "127.0.0.1, ::1", "127.0.0.1"),              # all proxies: the farthest
    ("127.0.0.1", "198.51.100.1:51234", "198.51.100.1"),
    ("127.0.0.1", "[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"),
    ("127.0.0.1", "2001:db8:1:2::9", "2001:db8:1:2::/64"),     # one subscriber's block
    ("::ffff:198.51.100.1", None, "198.51.100.1"),
    ("127.0.0.1", "unknown, 198.51.100.1", "198.51.100.1"),
    ("127.0.0.1", "198.51.100.1, garbage", "127.0.0.1"),       # the proxy passing it on
    ("127.0.0.1", "", "127.0.0.1"),
    ("", "198.51.100.1", "198.51.100.1"),                      # a unix socket: local proxy
    ("", None, "local"),
])
def test_client_address(peer, forwarded, client):
    assert client_address(peer, forwarded, LOOPBACK) == client


def test_trusted_networks_cover_a_proxy_tier():
    trusted = trusted_networks(["10.0.0.0/8"])
    assert client_address("10.1.2.3", "198.51.100.1, 10.4.5.6", trusted) == "198.51.100.1"
    assert client_address("127.0.0.1", "198.51.100.1", trusted) == "127.0.0.1"
    assert client_address("10.1.2.3", "198.51.100.1", ()) == "10.1.2.3"


# -- the limiter on a store ------------------------------------------------------------------

class Counting:
    """The store, counting writes."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.updates = inner, 0

    def update(self, *args: Any, **kwargs: Any) -> str | None:
        self.updates += 1
        return self.inner.update(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def limiter(store, clock, *, client=(1.0, 3), app=(1.0, 5)) -> Limiter:
    return Limiter(store, per_client=Bucket(*client), per_app=Bucket(*app), trusted=LOOPBACK,
                   clock=clock)


def refusal(limits: Limiter, appid: str, forwarded: str) -> RateLimited | None:
    try:
        limits.check(appid, "127.0.0.1", forwarded)
    except RateLimited as exc:
        return exc
    return None


def test_one_client_is_limited_alone_and_the_app_caps_them_all(store, clock):
    limits = limiter(store, clock)
    assert [refusal(limits, "wxA", "198.51.100.1") for _ in range(3)] == [None] * 3
    refused = refusal(limits, "wxA", "198.51.100.1")
    assert (refused.status, refused.errcode, refused.scope) == (429, RATE_LIMITED,
                                                                "from this client")
    assert refused.retry_after == 1 and refused.client == "198.51.100.1"
    assert refusal(limits, "wxA", "198.51.100.2") is None       # another client: its own
    assert refusal(limits, "wxB", "198.51.100.1") is None       # another app: its own
    assert refusal(limits, "wxA", "198.51.100.3") is None       # the app's 5th
    refused = refusal(limits, "wxA", "198.51.100.4")
    assert refused.scope == "to this app" and refused.retry_after == 1
    clock.advance(1.0)
    assert refusal(limits, "wxA", "198.51.100.4") is None


def test_refusals_write_nothing_and_spend_nothing_of_the_app(store, clock):
    counting = Counting(store)
    limits = limiter(counting, clock, client=(0.1, 2), app=(0.1, 3))
    for _ in range(50):
        refusal(limits, "wxA", "198.51.100.1")
    assert counting.updates == 4                  # the two allowed requests, two buckets each
    refused = refusal(limits, "wxA", "198.51.100.1")
    assert refused.retry_after == 10
    assert refusal(limits, "wxA", "198.51.100.2") is None      # one token of the app's left


def test_bucket_keys_expire_once_full_again(store, clock):
    refusal(limiter(store, clock, client=(0.5, 4)), "wxA", "198.51.100.1")
    key = "ratelimit:client:wxA:198.51.100.1"
    assert store.get(key) is not None and store.get("ratelimit:app:wxA") is not None
    clock.advance(8.01)
    assert store.get(key) is None and store.get("ratelimit:app:wxA") is None
