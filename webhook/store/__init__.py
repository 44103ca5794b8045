"""Stores: one contract (``base.Store``), two backends chosen by URL."""

from __future__ import annotations

from collections.abc import Callable
import logging
import time

from webhook.store.base import (INBOX_STATES, OUTBOX_STATES, WAIT, Backlog, Conversation,
                                HistoryItem, HistoryNote, InboxEntry, NewReply, OutboxRow, Store,
                                ValueUpdate, mask_url)

__all__ = ["Store", "InboxEntry", "NewReply", "OutboxRow", "OUTBOX_STATES", "INBOX_STATES",
           "ValueUpdate", "Backlog", "HistoryItem", "HistoryNote", "Conversation", "open_store",
           "require_durable"]

log = logging.getLogger(__name__)


def open_store(url: str, *, clock: Callable[[], float] = time.time,
               timeout: float = WAIT) -> Store:
    """``sqlite:///path`` (default, one host) or ``redis://host:port/db`` (several hosts);
    no call waits on it past ``timeout`` seconds.

    Raises StoreError naming the URL (never its password) if it cannot be reached."""
    if url.startswith("sqlite://"):
        from webhook.store.sqlite import SqliteStore
        return SqliteStore.from_url(url, clock=clock, timeout=timeout)
    from webhook.errors import StoreError
    if url.startswith(("redis://", "rediss://")):
        try:
            from webhook.store.redis import RedisStore
        except ModuleNotFoundError as exc:
            if exc.name != "redis":
                raise
            raise StoreError("a redis:// store needs the redis package, which is not "
                             "installed: pip install 'wxpush[redis]'") from None
        return RedisStore.from_url(url, clock=clock, timeout=timeout)
    raise StoreError(f"unsupported store URL scheme: {url.split('://')[0]!r}")


def require_durable(store: Store, url: str, *, allow_volatile: bool) -> None:
    """Where a server opens its store: refuse one whose server keeps nothing across its
    restart (a push counts as recorded, and is answered, once the store has it), unless
    ``allow_volatile`` (tests, experiments), which only warns; warn loudly when the store
    cannot tell."""
    keeps = store.keeps_data()
    if keeps:
        return
    where = mask_url(url)
    if keeps is None:
        log.warning("cannot tell whether the Redis at %s keeps what it is told across a restart "
                    "(CONFIG GET is not allowed): unless it runs with appendonly yes, a restart "
                    "loses pushes already answered", where)
    elif allow_volatile:
        log.warning("the Redis at %s keeps nothing across a restart (appendonly no, no save): "
                    "a restart loses pushes already answered; running anyway "
                    "(allow_volatile_redis)", where)
    else:
        from webhook.errors import StoreError
        raise StoreError(f"the Redis at {where} keeps nothing across a restart (appendonly no, "
                         "save \"\"), so a restart would lose pushes already answered: run it "
                         "with appendonly yes (or pass --allow-volatile-redis, [server] "
                         "allow_volatile_redis = true, to run anyway)")
