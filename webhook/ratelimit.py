"""Rate limits on the endpoints that call WeChat for their callers.

``/apps/{appid}/login``, ``/opendata`` and ``/phone`` each relay a request to WeChat
(jscode2session, getopendata, getuserphonenumber), spending the app's API quota, and so do
``/files/...`` (batchdownloadfile) and a logged-in user's ``/apps/{appid}/functions/...``
(invokecloudfunction). Every request takes one token from its client's bucket (per client
address and app; per session for function calls) and one from its app's (all clients
together); either one empty refuses it before WeChat is called.

The buckets live in the store (``Store.update``, an atomic read-modify-write on both
backends), so every worker and host shares them, and expire once they would be full again.
A refusal is decided on reads alone: a flood of refused requests writes nothing.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from webhook.errors import RequestRejected

__all__ = ["Bucket", "take", "client_address", "trusted_networks", "Limiter", "RateLimited",
           "RATE_LIMITED"]

# WeChat's own errcode for calling too often (docs/protocol.md §5.5, §7.1)
RATE_LIMITED = 45011

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Bucket:
    """``rate`` tokens a second, up to ``burst`` held: ``burst`` requests at once, then
    ``rate`` a second on average."""

    rate: float
    burst: int

    @property
    def ttl(self) -> float:
        """Seconds from empty to full: a state left this long is a full bucket."""
        return self.burst / self.rate


def take(state: str | None, now: float, bucket: Bucket) -> tuple[str | None, float]:
    """Take one token: (the new state, 0.0), or (None, seconds until a token is there).

    ``state`` is what the last take returned ("tokens time"); None is a full bucket."""
    tokens, at = float(bucket.burst), now
    if state:
        held, _, stamp = state.partition(" ")
        tokens, at = float(held), float(stamp)
    tokens = min(float(bucket.burst), tokens + max(0.0, now - at) * bucket.rate)
    if tokens < 1.0:
        return None, (1.0 - tokens) / bucket.rate
    return f"{tokens - 1.0!r} {max(now, at)!r}", 0.0


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``[server] trusted_proxies`` (addresses or networks, validated by settings) parsed."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def client_address(peer: str, forwarded_for: str | None,
                   trusted: tuple[Network, ...]) -> str:
    """Who a request's client bucket belongs to.

    The peer, unless it is a trusted proxy: then the nearest address in X-Forwarded-For that
    is not one, reading the header from its right end (each proxy appends the address it
    was called from; the left part is whatever the client sent, and proves nothing). A peer
    that is no IP address is a local socket, trusted. An entry that is no IP address stops
    the walk at the proxy that passed it on. IPv6 clients are keyed by their /64, the block
    one subscriber holds."""
    nearest = _address(peer)
    if nearest is None or any(nearest in network for network in trusted):
        for hop in reversed(forwarded_for.split(",")) if forwarded_for else ():
            address = _address(hop)
            if address is None:
                break
            nearest = address
            if not any(address in network for network in trusted):
                break
    if nearest is None:
        return "local"
    if isinstance(nearest, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((nearest, 64), strict=False))
    return str(nearest)


def _address(hop: str) -> Address | None:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``, ``[::1]:5678``."""
    text = hop.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class RateLimited(RequestRejected):
    """429: too many requests from this client, or to this app; retry after ``retry_after``
    whole seconds."""

    status = 429

    def __init__(self, scope: str, retry_after: float, client: str) -> None:
        self.scope, self.client = scope, client
        self.retry_after = max(1, math.ceil(retry_after))
        self.errcode = RATE_LIMITED
        super().__init__(f"too many requests {scope}: retry in {self.retry_after} s")


class ValueStore(Protocol):
    """What the limiter needs of ``webhook.store.Store``."""

    def get(self, key: str) -> str | None: ...

    def update(self, key: str, fn: Callable[[str | None], str | None], *,
               ttl: float | None = None) -> str | None: ...


class Limiter:
    """The two buckets of a request to one of the mini program endpoints."""

    def __init__(self, store: ValueStore, *, per_client: Bucket, per_app: Bucket,
                 trusted: tuple[Network, ...], clock: Callable[[], float]) -> None:
        self._store, self._clock, self._trusted = store, clock, trusted
        self._per_client, self._per_app = per_client, per_app

    def check(self, appid: str, peer: str, forwarded_for: str | None, *,
              session: str | None = None) -> None:
        """Take a token from the client's bucket and from ``appid``'s, or raise RateLimited
        (having taken none from the app's bucket: one client's flood spends only its own).
        ``peer`` and ``forwarded_for``: the request's REMOTE_ADDR and X-Forwarded-For.
        ``session`` (an id of a logged-in user's session, never the token itself): the
        first bucket is that session's, the size of a client's, wherever it calls from."""
        client = client_address(peer, forwarded_for, self._trusted)
        first = (f"ratelimit:session:{appid}:{session}", self._per_client, "for this session") \
            if session else (f"ratelimit:client:{appid}:{client}", self._per_client,
                             "from this client")
        buckets = (first, (f"ratelimit:app:{appid}", self._per_app, "to this app"))
        now = self._clock()
        for key, bucket, scope in buckets:
            wait = take(self._store.get(key), now, bucket)[1]
            if wait:
                raise RateLimited(scope, wait, client)
        for key, bucket, scope in buckets:   # the reads passed: take, atomically
            waits = [0.0]

            def taken(old: str | None, bucket: Bucket = bucket) -> str | None:
                new, waits[0] = take(old, now, bucket)
                return old if new is None else new

            self._store.update(key, taken, ttl=bucket.ttl)
            if waits[0]:
                raise RateLimited(scope, waits[0], client)
