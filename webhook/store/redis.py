"""The Redis store: several hosts share tokens, locks, dedupe keys and the outbox.

Key layout (``P`` is the prefix, ``wxpush:`` by default; standalone Redis, not Cluster)::

    P v:{key}            string "<expires_at>|<value>"   (expires_at empty: no ttl)
    P lock:{name}        string "<expires_at>|<owner>"
    P in:{key}           hash: one inbox entry + owner, lease_until, expires_at
    P in:due             zset: pending inbox keys by when they are due: at once when recorded,
                         when the lease runs out once taken
    P in:new             list: one element while a push was recorded and not yet looked for,
                         which the delivery processes wait on (BLPOP)
    P in:dead            zset: dead inbox keys by received_at (listing, purge)
    P ob:seq             INCR counter of outbox row ids
    P ob:row:{id}        hash: one outbox row (+ owner while sending)
    P ob:q:{appid}:{openid}  zset: the user's unfinished (pending/sending) row ids, by id
    P ob:ready           zset: users whose oldest unfinished row is pending, by its next_at
    P ob:leased          zset: users whose oldest unfinished row is sending, by lease expiry
    P ob:st:{state}      zset: row ids in each state (stats, listing), score = id
    P ob:all             zset: every row id (listing), score = id
    P ob:done            zset: sent and dead row ids by updated_at (purge)
    P h*, P t*           the history and tallies (``webhook.store.redis_history``)
    P schema             the key layout's version (SCHEMA_VERSION)

Expiry follows the store's clock (``expires_at`` and leases are compared with the ``now``
each call passes to Lua), so tests can drive it with a fake clock; keys also carry a
Redis TTL of the same length so that Redis reclaims their memory. A write is as durable
as the server makes it: run Redis with ``appendonly yes`` so an answered push survives a
Redis restart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
import time
from typing import Any

import redis

from webhook.errors import StoreError
from webhook.store import redis_scripts as lua
from webhook.store.base import (DID_NOT_FINISH, INBOX_STATES, OUTBOX_STATES, WAIT, Backlog,
                                InboxEntry, NewReply, OutboxRow, Store, ValueUpdate, log_duplicate,
                                mask_url)
from webhook.store.redis_errors import store_errors as _store_errors
from webhook.store.redis_history import RedisHistory

__all__ = ["RedisStore", "SCHEMA_VERSION"]

BATCH = 500   # ids per requeue / purge script call
# The key layout's version, kept under ``P schema`` (set by the first server to start); a
# server refuses a newer one.
SCHEMA_VERSION = 1
OLDEST_SCAN = 1000   # pending inbox entries read for the oldest (they are being handled: few)


def _px(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def _opt(value: object | None) -> str:
    return "" if value is None else f"={value}"


def _fields(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


def _inbox_entry(f: dict[str, str]) -> InboxEntry:
    return InboxEntry(key=f["key"], appid=f["appid"], format=f["format"], payload=f["payload"],
                      answer=f["answer"], received_at=float(f["received_at"]),
                      state=f["state"], attempts=int(f["attempts"]), error=f.get("error"))


def _outbox_row(f: dict[str, str]) -> OutboxRow:
    errcode = f.get("errcode")
    return OutboxRow(id=f["id"], appid=f["appid"], openid=f["openid"], body=f["body"],
                     rule=f["rule"], state=f["state"], attempts=int(f["attempts"]),
                     next_at=float(f["next_at"]), created_at=float(f["created_at"]),
                     updated_at=float(f["updated_at"]),
                     errcode=None if errcode is None else int(errcode), errmsg=f.get("errmsg"))


class RedisStore(RedisHistory, Store):
    """``Store`` over one Redis database; ``client`` must decode responses to str."""

    remote = True

    def __init__(self, client: redis.Redis, *, prefix: str = "wxpush:",
                 clock: Callable[[], float] = time.time) -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisStore needs a client made with decode_responses=True")
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self._scripts = {name: client.register_script(getattr(lua, name)) for name in lua.__all__}
        self._scripts.update(self.history_scripts(client))

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "wxpush:",
                 clock: Callable[[], float] = time.time, timeout: float = WAIT) -> RedisStore:
        """``redis://[:password@]host:port/db``; pings once so a wrong URL fails at start.
        A call that gets no answer within ``timeout`` seconds raises StoreError."""
        try:
            client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                          socket_connect_timeout=timeout,
                                          health_check_interval=30)
            client.ping()
            client.set(f"{prefix}schema", SCHEMA_VERSION, nx=True)
            found = int(client.get(f"{prefix}schema") or SCHEMA_VERSION)
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"cannot reach redis store {mask_url(url)}: "
                             f"{type(exc).__name__}: {exc}") from exc
        if found > SCHEMA_VERSION:
            raise StoreError(f"redis store {mask_url(url)} has schema version {found}, newer "
                             f"than this wxpush's {SCHEMA_VERSION}: run the wxpush that wrote "
                             "it, or a newer one")
        return cls(client, prefix=prefix, clock=clock)

    def close(self) -> None:
        self.client.close()

    @_store_errors
    def keeps_data(self) -> bool | None:
        """appendonly yes, or a ``save`` schedule; None where CONFIG is renamed away or not
        allowed (managed Redis, an ACL without +config)."""
        try:
            appendonly = self.client.config_get("appendonly").get("appendonly")
            save = self.client.config_get("save").get("save")
        except redis.ResponseError:
            return None
        return appendonly == "yes" or bool(save and save.strip())

    def _run(self, script: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        return self._scripts[script](keys=keys, args=args)

    def _run_p(self, script: str, now: float, *args: object) -> Any:
        """Run an inbox/outbox script: ARGV starts with the prefix and the current time."""
        return self._run(script, (), (self.prefix, repr(now), *args))

    # -- values ---------------------------------------------------------------------------
    def _vkey(self, key: str) -> str:
        return f"{self.prefix}v:{key}"

    @staticmethod
    def _decode(raw: str | None, now: float) -> str | None:
        if raw is None:
            return None
        expires, _, value = raw.partition("|")
        return value if not expires or float(expires) > now else None

    @staticmethod
    def _encode(value: str, now: float, ttl: float | None) -> str:
        return f"{'' if ttl is None else repr(now + ttl)}|{value}"

    @_store_errors
    def get(self, key: str) -> str | None:
        return self._decode(self.client.get(self._vkey(key)), self.clock())

    @_store_errors
    def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        self.client.set(self._vkey(key), self._encode(value, self.clock(), ttl),
                        px=None if ttl is None else _px(ttl))

    @_store_errors
    def put_new(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        now = self.clock()
        return bool(self._run("PUT_NEW", [self._vkey(key)],
                              [repr(now), self._encode(value, now, ttl),
                               "" if ttl is None else _px(ttl)]))

    @_store_errors
    def delete(self, key: str) -> None:
        self.client.delete(self._vkey(key))

    @_store_errors
    def delete_if(self, key: str, expected: str) -> bool:
        return bool(self._run("DELETE_IF", [self._vkey(key)], [repr(self.clock()), expected]))

    @_store_errors
    def update(self, key: str, fn: Callable[[str | None], str | None], *,
               ttl: float | None = None) -> str | None:
        vkey = self._vkey(key)
        while True:   # optimistic: read, compute, write if it has not moved; again if it has
            raw, now = self.client.get(vkey), self.clock()
            new = fn(self._decode(raw, now))
            if self._run("SWAP", [vkey], [raw or "",
                                          "" if new is None else self._encode(new, now, ttl),
                                          "" if new is None or ttl is None else _px(ttl)]):
                return new

    # -- lease lock -----------------------------------------------------------------------
    @_store_errors
    def acquire(self, name: str, owner: str, *, lease: float) -> bool:
        now = self.clock()
        return bool(self._run("ACQUIRE", [f"{self.prefix}lock:{name}"],
                              [repr(now), owner, repr(now + lease), _px(lease)]))

    @_store_errors
    def release(self, name: str, owner: str) -> bool:
        return bool(self._run("DELETE_IF", [f"{self.prefix}lock:{name}"],
                              [repr(self.clock()), owner]))

    # -- inbox ----------------------------------------------------------------------------
    @_store_errors
    def inbox_record(self, entry: InboxEntry, *, ttl: float) -> str | None:
        now = self.clock()
        found = self._run_p("INBOX_RECORD", now, entry.key, entry.appid, entry.format,
                            entry.payload, entry.answer, repr(entry.received_at),
                            repr(now + ttl), _px(ttl))
        if found is None:
            return None
        log_duplicate(entry, found[1])
        return found[0]

    @_store_errors
    def inbox_take(self, *, owner: str, lease: float, limit: int, max_attempts: int,
                   wait: float = 0.0) -> list[InboxEntry]:
        if lease <= 0:
            raise ValueError("lease must be positive")
        taken = self._take(owner, lease, limit, max_attempts)
        if not taken and wait > 0 and self.client.blpop([f"{self.prefix}in:new"], wait):
            taken = self._take(owner, lease, limit, max_attempts)
        return taken

    def _take(self, owner: str, lease: float, limit: int, max_attempts: int) -> list[InboxEntry]:
        now = self.clock()
        found = self._run_p("INBOX_TAKE", now, owner, repr(now + lease), limit, max_attempts,
                            DID_NOT_FINISH)
        return sorted((_inbox_entry(_fields(f)) for f in found), key=lambda e: e.received_at)

    @_store_errors
    def inbox_retry(self, key: str, *, owner: str, next_at: float, error: str) -> bool:
        return self._run_p("INBOX_RETRY", self.clock(), key, owner, repr(next_at), error) == 1

    @_store_errors
    def inbox_dead(self, key: str, *, owner: str, error: str) -> bool:
        return self._run_p("INBOX_DEAD", self.clock(), key, owner, error) == 1

    @_store_errors
    def inbox_stats(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(f"{self.prefix}in:due")
        pipe.zcard(f"{self.prefix}in:dead")
        return dict(zip(INBOX_STATES, pipe.execute()))

    @_store_errors
    def inbox_list(self, *, state: str | None = None, limit: int = 100) -> list[InboxEntry]:
        if limit <= 0:
            return []
        keys = []
        if state in (None, "dead"):
            keys += self.client.zrevrange(f"{self.prefix}in:dead", 0, limit - 1)
        if state in (None, "pending"):   # recorded, being handled or waiting: few
            keys += self.client.zrange(f"{self.prefix}in:due", 0, -1)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(f"{self.prefix}in:{key}")
        now = self.clock()
        entries = [_inbox_entry(f) for f in pipe.execute()
                   if f and (f["state"] == "dead" or (f["state"] == "pending"
                                                     and float(f["expires_at"]) > now))]
        return sorted(entries, key=lambda e: e.received_at, reverse=True)[:limit]

    @_store_errors
    def inbox_requeue(self, keys: Sequence[str] | None = None, *, ttl: float) -> int:
        now = self.clock()
        return self._requeue("INBOX_REQUEUE", "in:dead", keys, now, repr(now + ttl), _px(ttl))

    @_store_errors
    def inbox_purge(self, *, before: float) -> int:
        return self._purge("INBOX_PURGE", before)

    @_store_errors
    def inbox_renew(self, key: str, *, owner: str, lease: float) -> bool:
        now = self.clock()
        return self._run_p("INBOX_RENEW", now, key, owner, repr(now + lease)) == 1

    def inbox_finish(self, key: str, replies: Sequence[NewReply], *, owner: str,
                     also: ValueUpdate | None = None) -> list[OutboxRow]:
        if also is not None:   # idempotent, so applying it before the finish is safe
            self.update(also.key, also.fn, ttl=also.ttl)
        args = [x for r in replies for x in (r.appid, r.openid, r.body, r.rule)]
        rows = self._run_p("INBOX_FINISH", self.clock(), key, *args)
        return [_outbox_row(_fields(r)) for r in rows]

    # -- outbox ---------------------------------------------------------------------------
    @_store_errors
    def outbox_add(self, replies: Sequence[NewReply]) -> list[OutboxRow]:
        args = [x for r in replies for x in (r.appid, r.openid, r.body, r.rule)]
        return [_outbox_row(_fields(r)) for r in self._run_p("OUTBOX_ADD", self.clock(), *args)]

    def _row_key(self, row_id: str) -> str:
        return f"{self.prefix}ob:row:{row_id}"

    @_store_errors
    def outbox_claim(self, *, owner: str, lease: float, limit: int) -> list[OutboxRow]:
        if lease <= 0:
            raise ValueError("lease must be positive")
        now = self.clock()
        rows = self._run_p("OUTBOX_CLAIM", now, owner, repr(now + lease), limit)
        return sorted((_outbox_row(_fields(r)) for r in rows), key=lambda r: int(r.id))

    def _mark(self, row_id: str, owner: str, outcome: str, next_at: float | None = None,
              errcode: int | None = None, errmsg: str | None = None) -> bool:
        return bool(self._run_p("OUTBOX_MARK", self.clock(), row_id, owner, outcome,
                                "" if next_at is None else repr(next_at),
                                _opt(errcode), _opt(errmsg)))

    @_store_errors
    def outbox_sent(self, row_id: str, *, owner: str, also: ValueUpdate | None = None) -> bool:
        marked = self._mark(row_id, owner, "sent")
        if also is not None:
            self.update(also.key, also.fn, ttl=also.ttl)
        return marked

    @_store_errors
    def outbox_retry(self, row_id: str, *, owner: str, next_at: float, errcode: int | None,
                     errmsg: str | None) -> bool:
        return self._mark(row_id, owner, "retry", next_at, errcode, errmsg)

    @_store_errors
    def outbox_dead(self, row_id: str, *, owner: str, errcode: int | None,
                    errmsg: str | None) -> bool:
        return self._mark(row_id, owner, "dead", None, errcode, errmsg)

    @_store_errors
    def outbox_get(self, row_id: str) -> OutboxRow | None:
        fields = self.client.hgetall(self._row_key(row_id))
        return _outbox_row(fields) if fields else None

    @_store_errors
    def outbox_stats(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for state in OUTBOX_STATES:
            pipe.zcard(f"{self.prefix}ob:st:{state}")
        return dict(zip(OUTBOX_STATES, pipe.execute()))

    @_store_errors
    def outbox_list(self, *, state: str | None = None, limit: int = 100) -> list[OutboxRow]:
        if limit <= 0:
            return []
        index = f"{self.prefix}ob:{'all' if state is None else 'st:' + state}"
        ids = self.client.zrevrange(index, 0, limit - 1)
        pipe = self.client.pipeline(transaction=False)
        for row_id in ids:
            pipe.hgetall(self._row_key(row_id))
        return [_outbox_row(f) for f in pipe.execute() if f]

    @_store_errors
    def outbox_requeue(self, row_ids: Sequence[str] | None = None) -> int:
        return self._requeue("OUTBOX_REQUEUE", "ob:st:dead", row_ids, self.clock())

    @_store_errors
    def outbox_purge(self, *, before: float) -> int:
        return self._purge("OUTBOX_PURGE", before)

    # -- both queues ----------------------------------------------------------------------
    @_store_errors
    def backlog(self) -> Backlog:
        p = self.prefix
        pipe = self.client.pipeline(transaction=False)
        for index in ("in:due", "in:dead", "ob:st:pending", "ob:st:sending", "ob:st:dead"):
            pipe.zcard(p + index)
        pipe.zrange(p + "ob:st:pending", 0, 0)
        pipe.zrange(p + "ob:st:sending", 0, 0)
        pipe.zrange(p + "in:due", 0, OLDEST_SCAN - 1)
        inbox, inbox_dead, pending, sending, outbox_dead, *firsts, leased = pipe.execute()
        for row_id in (i for ids in firsts for i in ids):
            pipe.hget(self._row_key(row_id), "created_at")
        for key in leased:
            pipe.hget(f"{p}in:{key}", "received_at")
        times = pipe.execute() if len(pipe) else []
        created = [float(t) for t in times[:len(times) - len(leased)] if t is not None]
        received = [float(t) for t in times[len(times) - len(leased):] if t is not None]
        return Backlog(inbox=inbox, inbox_oldest=min(received, default=None),
                       outbox=pending + sending, outbox_oldest=min(created, default=None),
                       inbox_dead=inbox_dead, outbox_dead=outbox_dead)

    def _requeue(self, script: str, dead: str, ids: Sequence[str] | None, now: float,
                 *args: object) -> int:
        """Run a requeue script over ``ids`` (all in the ``dead`` index if None), a batch
        at a time; how many came back."""
        ids = list(ids) if ids is not None else self.client.zrange(self.prefix + dead, 0, -1)
        return sum(self._run_p(script, now, *args, *ids[i:i + BATCH])
                   for i in range(0, len(ids), BATCH))

    def _purge(self, script: str, before: float) -> int:
        """Run a purge script until a run deletes less than a batch; how many it deleted."""
        total = 0
        while True:
            n = self._run_p(script, before, BATCH)
            total += n
            if n < BATCH:
                return total
