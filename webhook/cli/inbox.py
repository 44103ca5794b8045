"""``wxpush inbox``: look at and repair the pushes waiting to be handled (stats, list, retry,
purge), above all those set aside as dead because their handling kept failing."""

from __future__ import annotations

import argparse

from webhook.cli.queues import Queue, register_queue, when
from webhook.store import INBOX_STATES, Store

__all__ = ["register", "INBOX"]


def _lines(store: Store, state: str | None, limit: int) -> list[str]:
    return [f"{entry.key}  {entry.state:8} {when(entry.received_at)} attempts={entry.attempts}"
            f"{' error=' + entry.error if entry.error else ''}"
            for entry in store.inbox_list(state=state, limit=limit)]


INBOX = Queue(command="inbox", help="inspect and repair the pushes waiting to be handled",
              thing="push", things="pushes", key="key", states=INBOX_STATES, stats=lambda store: store.inbox_stats(),
              lines=_lines,
              requeue=lambda store, settings, keys: store.inbox_requeue(
                  keys, ttl=settings.server.dedupe_ttl),
              purge=lambda store, before: store.inbox_purge(before=before),
              purged="dead pushes received")


def register(sub: argparse._SubParsersAction) -> None:
    register_queue(sub, INBOX)
