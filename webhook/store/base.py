"""The Store contract: what every backend (SQLite, Redis) provides, and nothing more.

Five concerns, all keyed so several apps share one store:

- values with a TTL: cached access_tokens, login sessions, uploaded media ids, quota state;
- a lease lock: ``SET NX PX`` semantics, released only by its holder (token single-flight);
- the inbox: one entry per push, keyed by its dedupe key, recorded on the request path and
  taken by the delivery process; a retry of the push is answered as the first delivery was;
  one whose handling keeps failing is set aside ("dead") with its error, until requeued;
- the outbox: one row per reply, claimed with a lease, delivered in order per user;
- the history the console shows: each conversation's timeline (what the customer sent, what
  was sent back and how that went), its "needs a human" flag, and daily tallies (rule hits,
  unmatched texts), kept until purged.

Time comes from the clock the store was built with (``clock() -> float`` unix seconds), so
tests can drive expiry without sleeping. No call waits on the store for longer than the
store's ``timeout`` (``WAIT`` unless told): past it, StoreError, which the request path
answers with 503 (WeChat delivers the push again) rather than holding a request thread.
"""

from __future__ import annotations

import abc
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from webhook.logsafe import shown
from webhook.metrics import DUPLICATES

__all__ = ["Store", "InboxEntry", "OutboxRow", "NewReply", "ValueUpdate", "Backlog",
           "HistoryItem", "Conversation", "timeline_order", "OUTBOX_STATES", "INBOX_STATES",
           "DID_NOT_FINISH", "WAIT", "log_duplicate", "lease_owner", "mask_url"]

log = logging.getLogger(__name__)

OUTBOX_STATES = ("pending", "sending", "sent", "dead")
# The inbox's states worth counting and listing; a done entry only keeps its key till expiry.
INBOX_STATES = ("pending", "dead")
# The error of an entry set aside by ``inbox_take``: its last handling never ended.
DID_NOT_FINISH = "LeaseExpired: its handler did not finish (its process died or hung)"
WAIT = 2.0   # seconds: well inside WeChat's 5 s for an answer


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One push. ``payload`` is the decrypted message text in ``format`` ("xml"/"json");
    ``answer`` is the exact HTTP body the first delivery got (a retry gets the same)."""

    key: str             # "{appid}:{message.dedupe_key}"
    appid: str
    format: str
    payload: str
    answer: str
    received_at: float
    state: str = "pending"   # pending | done | dead
    attempts: int = 0        # how many times it was taken to be handled
    error: str | None = None  # why the last handling failed: error type and a short reason


@dataclass(frozen=True, slots=True)
class NewReply:
    """A reply to enqueue: ``body`` is ``Reply.payload()`` as JSON text."""

    appid: str
    openid: str
    body: str
    rule: str = ""


@dataclass(frozen=True, slots=True)
class ValueUpdate:
    """``Store.update(key, fn, ttl=ttl)``, to be applied together with another write."""

    key: str
    fn: Callable[[str | None], str | None]
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: str
    appid: str
    openid: str
    body: str
    rule: str
    state: str           # one of OUTBOX_STATES
    attempts: int
    next_at: float       # not claimable before this time
    created_at: float
    updated_at: float
    errcode: int | None = None
    errmsg: str | None = None


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits, for /readyz and /metrics: how many of each, and when the oldest one arrived
    (store clock; None when there is none)."""

    journal: int = 0                      # pushes logged, not yet in the inbox (SQLite)
    journal_oldest: float | None = None
    inbox: int = 0                        # pushes recorded, not yet handled
    inbox_oldest: float | None = None
    outbox: int = 0                       # replies not yet sent (pending or sending)
    outbox_oldest: float | None = None
    inbox_dead: int = 0                   # pushes set aside
    outbox_dead: int = 0                  # replies set aside


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One line of a conversation's timeline: what the customer sent (``direction`` "in",
    ``item`` the push's inbox key) or what was sent to them ("out", ``item`` "reply:{row id}").
    ``body`` is JSON text; ``state`` (queued, sent, retrying, dead), ``errcode`` and
    ``errmsg`` follow a reply's delivery."""

    item: str
    at: float
    direction: str
    body: str
    rule: str = ""
    state: str = ""
    errcode: int | None = None
    errmsg: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryNote:
    """``items`` to note in one conversation (``Store.history_add``); ``preview`` (None:
    unchanged) replaces the conversation's; ``flag`` marks it as needing a human for that
    reason (flagged since the first such mark) until ``history_handled``."""

    appid: str
    openid: str
    items: Sequence[HistoryItem]
    preview: str | None = None
    flag: str | None = None


def timeline_order(item: HistoryItem) -> tuple[float, str, int, str]:
    """A timeline's order: by time, a push before the replies it got at the same instant,
    replies in the order they were queued (their ids as numbers)."""
    return item.at, item.direction, len(item.item), item.item


@dataclass(frozen=True, slots=True)
class Conversation:
    """One customer of one app, as the console lists them: last activity, the latest thing
    the customer sent (``preview``, JSON text like a body), and why it needs a human, if so."""

    appid: str
    openid: str
    last_at: float
    preview: str = ""
    flag: str | None = None
    flagged_at: float | None = None


class Store(abc.ABC):
    """Implementations: ``webhook.store.sqlite.SqliteStore``, ``webhook.store.redis.RedisStore``."""

    clock: Callable[[], float]
    #: Whether its calls wait on another server, over the network (Redis).
    remote: bool = False

    # -- values ---------------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, key: str) -> str | None:
        """The value, or None if absent or expired."""

    @abc.abstractmethod
    def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        """Set ``key`` (overwriting), expiring after ``ttl`` seconds if given."""

    @abc.abstractmethod
    def put_new(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        """Set only if absent or expired; True if this call set it."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def delete_if(self, key: str, expected: str) -> bool:
        """Delete only while the value still equals ``expected`` (compare-and-delete)."""

    @abc.abstractmethod
    def update(self, key: str, fn: Callable[[str | None], str | None], *,
               ttl: float | None = None) -> str | None:
        """Atomically replace the value with ``fn(old)`` (None deletes); returns the new value.
        ``fn`` may run more than once (optimistic retry) and must be pure."""

    # -- lease lock -----------------------------------------------------------------------
    @abc.abstractmethod
    def acquire(self, name: str, owner: str, *, lease: float) -> bool:
        """Take the lock if free or its lease ran out; True if ``owner`` now holds it."""

    @abc.abstractmethod
    def release(self, name: str, owner: str) -> bool:
        """Release only if ``owner`` still holds it."""

    # -- inbox ----------------------------------------------------------------------------
    @abc.abstractmethod
    def inbox_record(self, entry: InboxEntry, *, ttl: float) -> str | None:
        """Record a push for ``inbox_take``, durably (written before this returns), its key
        kept ``ttl`` seconds; None if the key is new, else (a retry, not handled again) the
        answer the first delivery got, with a log line."""

    @abc.abstractmethod
    def inbox_take(self, *, owner: str, lease: float, limit: int, max_attempts: int,
                   wait: float = 0.0) -> list[InboxEntry]:
        """Lease up to ``limit`` pending entries that are due: recorded and not yet taken, or
        whose lease ran out (their handler died, or failed and waited for ``inbox_retry``'s
        ``next_at``); with none due, wait up to ``wait`` seconds for a push to be recorded.
        One already taken ``max_attempts`` times is set aside instead, as ``inbox_dead``
        would (its error: the handler did not finish), and returned with state "dead"."""

    @abc.abstractmethod
    def inbox_retry(self, key: str, *, owner: str, next_at: float, error: str) -> bool:
        """``owner``'s handling failed: the entry is due again from ``next_at``, with
        its ``error`` kept; False if it is no longer ``owner``'s."""

    @abc.abstractmethod
    def inbox_dead(self, key: str, *, owner: str, error: str) -> bool:
        """Set aside with its ``error``: never taken again unless requeued, and kept (its
        key too, so a retry of the push is still a duplicate) until purged, whatever its ttl;
        False if it is no longer ``owner``'s."""

    @abc.abstractmethod
    def inbox_renew(self, key: str, *, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease on a pending entry it is still handling, so that a slow
        handler is not taken and run a second time; False if the entry is no longer its."""

    @abc.abstractmethod
    def inbox_finish(self, key: str, replies: Sequence[NewReply], *, owner: str,
                     also: ValueUpdate | None = None) -> list[OutboxRow]:
        """Mark the entry done and enqueue its replies, atomically; a no-op returning [] if
        the entry is already done (another owner finished it after our lease ran out).

        ``also`` (an idempotent value update, e.g. the user's send window) is applied in the
        same transaction where the backend has one (SQLite: one write instead of two, which
        is what many workers on one file contend for), else just before."""

    @abc.abstractmethod
    def inbox_stats(self) -> dict[str, int]:
        """Entry count per state of INBOX_STATES, every one present."""

    @abc.abstractmethod
    def inbox_list(self, *, state: str | None = None, limit: int = 100) -> list[InboxEntry]:
        """Entries in one of INBOX_STATES (``state``, or any of them), newest received first."""

    @abc.abstractmethod
    def inbox_requeue(self, keys: Sequence[str] | None = None, *, ttl: float) -> int:
        """Dead entries (all of them if ``keys`` is None) back to pending, due now, with
        their attempts from zero and their key kept ``ttl`` seconds more; the count."""

    @abc.abstractmethod
    def inbox_purge(self, *, before: float) -> int:
        """Delete dead entries received before ``before``; the count."""

    # -- outbox ---------------------------------------------------------------------------
    @abc.abstractmethod
    def outbox_claim(self, *, owner: str, lease: float, limit: int) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows (pending with next_at <= now, or sending with an
        expired lease), at most one per (appid, openid), and only each user's oldest
        unfinished row, so that replies to one user keep their order."""

    @abc.abstractmethod
    def outbox_sent(self, row_id: str, *, owner: str, also: ValueUpdate | None = None) -> bool:
        """Mark sent; False if ``owner`` no longer holds the row. ``also`` (the user's send
        window, counting the send) is applied either way: the reply went out; in the same
        transaction where the backend has one (as for ``inbox_finish``), else just after."""

    @abc.abstractmethod
    def outbox_retry(self, row_id: str, *, owner: str, next_at: float, errcode: int | None,
                     errmsg: str | None) -> bool:
        """Back to pending until ``next_at``, attempts + 1, last error kept."""

    @abc.abstractmethod
    def outbox_dead(self, row_id: str, *, owner: str, errcode: int | None,
                    errmsg: str | None) -> bool:
        """Dead-letter: never claimed again unless requeued; the user's next row proceeds."""

    @abc.abstractmethod
    def outbox_get(self, row_id: str) -> OutboxRow | None:
        """One row by its id (None if there is no such row)."""

    @abc.abstractmethod
    def outbox_stats(self) -> dict[str, int]:
        """Row count per state, every state in OUTBOX_STATES present."""

    @abc.abstractmethod
    def outbox_list(self, *, state: str | None = None, limit: int = 100) -> list[OutboxRow]:
        """Rows, newest first, optionally of one state."""

    @abc.abstractmethod
    def outbox_requeue(self, row_ids: Sequence[str] | None = None) -> int:
        """Dead rows back to pending now (all dead rows if ``row_ids`` is None); the count."""

    @abc.abstractmethod
    def outbox_purge(self, *, before: float) -> int:
        """Delete sent and dead rows last updated before ``before``; the count."""

    @abc.abstractmethod
    def backlog(self) -> Backlog:
        """Counts and oldest arrivals of what waits; cheap enough to ask at every scrape
        (each figure read through an index, not a scan of what was sent)."""

    @abc.abstractmethod
    def outbox_add(self, replies: Sequence[NewReply]) -> list[OutboxRow]:
        """Enqueue replies that answer no push (an operator's), as ``inbox_finish`` would."""

    # -- history --------------------------------------------------------------------------
    @abc.abstractmethod
    def history_add(self, notes: Sequence[HistoryNote]) -> None:
        """Note each of ``notes`` in turn, in one write: its conversation becomes its app's
        most recent. An item already noted keeps its ``at``, ``direction`` and ``body`` and
        takes the new ``rule``, ``state``, ``errcode`` and ``errmsg``."""

    @abc.abstractmethod
    def history_handled(self, appid: str, openid: str) -> bool:
        """Clear the conversation's flag; True if it had one."""

    @abc.abstractmethod
    def history_conversations(self, *, appids: Sequence[str] | None = None,
                              flagged: bool = False, limit: int = 100) -> list[Conversation]:
        """Conversations (of ``appids`` only, if given; flagged ones only, if ``flagged``),
        the most recently active first."""

    @abc.abstractmethod
    def history_conversation(self, appid: str, openid: str) -> Conversation | None: ...

    @abc.abstractmethod
    def history_timeline(self, appid: str, openid: str, *,
                         limit: int = 200) -> list[HistoryItem]:
        """The conversation's latest ``limit`` items, oldest first (``timeline_order``)."""

    @abc.abstractmethod
    def history_purge(self, *, before: float) -> int:
        """Delete items last noted before ``before``, and conversations with no activity
        since; how many items."""

    @abc.abstractmethod
    def tally_add(self, counts: Mapping[tuple[str, int, str], int]) -> None:
        """Count each (kind, day, name) of ``counts`` (days: unix days) that many times
        more, in one write."""

    @abc.abstractmethod
    def tally_top(self, kind: str, *, since: int, limit: int = 20) -> list[tuple[str, int]]:
        """The ``limit`` names of ``kind`` counted most from day ``since`` on, with their
        counts, the highest first (ties by name)."""

    @abc.abstractmethod
    def tally_purge(self, *, before: int) -> int:
        """Forget the tallies of days before ``before``; how many (kind, name, day) counts."""

    def keeps_data(self) -> bool | None:
        """Whether what the store was told survives a restart of the server holding it (None:
        it cannot tell). A file does; a Redis only with appendonly or snapshots."""
        return True

    def close(self) -> None:
        """Release connections."""


def log_duplicate(entry: InboxEntry, state: str) -> None:
    """A delivery of a push already recorded (a WeChat retry): answered, not handled again."""
    DUPLICATES.labels(entry.appid).inc()
    log.info("push duplicate appid=%s key=%s state=%s", entry.appid,
             shown(entry.key.partition(":")[2]), state)


def lease_owner() -> str:
    """A name for who holds a lease: its host and process, so an operator can see who holds
    what, and a random part, so two holders are never taken for one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def mask_url(url: str) -> str:
    """A store URL with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***@"
    return urlunsplit(parts._replace(netloc=userinfo + parts.netloc.rpartition("@")[2]))
