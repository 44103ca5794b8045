"""``wxpush inbox``: look at and repair the pushes waiting to be handled (stats, list, retry,
purge), above all those set aside as dead because their handling kept failing."""

from __future__ import annotations

import argparse

from webhook.cli.queues import Queue, register_queue, when
from webhook.errors import WxpushError
from webhook.logsafe import shown
from webhook.push.messages import hashed
from webhook.push.parsing import parse_body
from webhook.store import INBOX_STATES, InboxEntry, Store

__all__ = ["register", "INBOX", "sender"]


def _stats(store: Store) -> dict[str, int]:
    counts = store.inbox_stats()
    if store.journaled:   # recorded, not yet ingested: a growing count means no delivery process
        counts["journal"] = store.inbox_waiting()
    return counts


def _lines(store: Store, state: str | None, limit: int, reveal: bool) -> list[str]:
    lines = []
    for entry in store.inbox_list(state=state, limit=limit):
        openid = sender(entry)
        user = "-" if openid is None else shown(openid) if reveal else hashed(openid)
        lines.append(f"{entry.key}  {entry.state:8} {when(entry.received_at)} user={user} "
                     f"attempts={entry.attempts}{' error=' + entry.error if entry.error else ''}")
    return lines


def sender(entry: InboxEntry) -> str | None:
    """The customer who sent the push (its FromUserName); None if its payload does not read."""
    try:
        openid = parse_body(entry.payload.encode("utf-8"), entry.format).get("FromUserName")
    except WxpushError:
        return None
    return openid if isinstance(openid, str) and openid else None


INBOX = Queue(command="inbox", help="inspect and repair the pushes waiting to be handled",
              thing="push", things="pushes", key="key", states=INBOX_STATES, stats=_stats,
              lines=_lines, user="sender",
              requeue=lambda store, settings, keys: store.inbox_requeue(
                  keys, ttl=settings.server.dedupe_ttl),
              purge=lambda store, before: store.inbox_purge(before=before),
              purged="dead pushes received")


def register(sub: argparse._SubParsersAction) -> None:
    register_queue(sub, INBOX)
