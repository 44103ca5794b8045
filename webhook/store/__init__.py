"""Stores: one contract (``base.Store``), two backends chosen by URL."""

from __future__ import annotations

from collections.abc import Callable
import time

from webhook.store.base import (INBOX_STATES, OUTBOX_STATES, WAIT, InboxEntry, NewReply,
                                OutboxRow, Store, ValueUpdate)

__all__ = ["Store", "InboxEntry", "NewReply", "OutboxRow", "OUTBOX_STATES", "INBOX_STATES",
           "ValueUpdate", "open_store"]


def open_store(url: str, *, clock: Callable[[], float] = time.time,
               timeout: float = WAIT) -> Store:
    """``sqlite:///path`` (default, one host) or ``redis://host:port/db`` (several hosts);
    no call waits on it past ``timeout`` seconds.

    Raises StoreError naming the URL (never its password) if it cannot be reached."""
    if url.startswith("sqlite://"):
        from webhook.store.sqlite import SqliteStore
        return SqliteStore.from_url(url, clock=clock, timeout=timeout)
    if url.startswith(("redis://", "rediss://")):
        from webhook.store.redis import RedisStore
        return RedisStore.from_url(url, clock=clock, timeout=timeout)
    from webhook.errors import StoreError
    raise StoreError(f"unsupported store URL scheme: {url.split('://')[0]!r}")
