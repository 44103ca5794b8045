"""``wxpush outbox``: look at and repair the reply queue (stats, list, retry, purge)."""

from __future__ import annotations

import argparse

from webhook.cli.queues import Queue, register_queue, when
from webhook.store import OUTBOX_STATES, Store

__all__ = ["register", "OUTBOX"]


def _lines(store: Store, state: str | None, limit: int) -> list[str]:
    lines = []
    for row in store.outbox_list(state=state, limit=limit):
        error = f" errcode={row.errcode}" if row.errcode is not None else ""
        reason = f" {row.errmsg}" if row.errmsg else ""
        lines.append(f"{row.id:>8} {row.state:8} {when(row.updated_at)} appid={row.appid} "
                     f"rule={row.rule or '-'} attempts={row.attempts}{error}{reason}")
    return lines


OUTBOX = Queue(command="outbox", help="inspect and repair the reply queue", thing="row",
               things="rows", key="id", states=OUTBOX_STATES,
               stats=lambda store: store.outbox_stats(), lines=_lines,
               requeue=lambda store, _, ids: store.outbox_requeue(ids),
               purge=lambda store, before: store.outbox_purge(before=before),
               purged="sent and dead rows")


def register(sub: argparse._SubParsersAction) -> None:
    register_queue(sub, OUTBOX)
