"""``wxpush outbox``: look at and repair the reply queue (stats, list, retry, purge)."""

from __future__ import annotations

import argparse
import json

from webhook.cli.queues import Queue, register_queue, when
from webhook.logsafe import shown
from webhook.push.messages import hashed
from webhook.store import OUTBOX_STATES, Store

__all__ = ["register", "OUTBOX", "reply_text"]

TEXT_SHOWN = 40     # characters of a reply's text in a listing


def _lines(store: Store, state: str | None, limit: int, reveal: bool) -> list[str]:
    lines = []
    for row in store.outbox_list(state=state, limit=limit):
        error = f" errcode={row.errcode}" if row.errcode is not None else ""
        reason = f" {shown(row.errmsg)}" if row.errmsg else ""
        user = shown(row.openid) if reveal else hashed(row.openid)
        lines.append(f"{row.id:>8} {row.state:8} {when(row.updated_at)} appid={row.appid} "
                     f"user={user} rule={row.rule or '-'} attempts={row.attempts}{error}"
                     f"{reason}  {reply_text(row.body)}")
    return lines


def reply_text(body: str) -> str:
    """What a reply says, cut short: ``text 您好...``, ``image MEDIA_ID``, a card's title."""
    try:
        payload = json.loads(body)
        kind = payload["msgtype"]
        part = payload.get(kind) or {}
        said = next((part[key] for key in ("content", "title", "media_id", "path")
                     if part.get(key)), "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return shown(body, TEXT_SHOWN)
    return f"{shown(kind, 20)} {shown(said, TEXT_SHOWN)}".rstrip()


OUTBOX = Queue(command="outbox", help="inspect and repair the reply queue", thing="row",
               things="rows", key="id", states=OUTBOX_STATES,
               stats=lambda store: store.outbox_stats(), lines=_lines, user="recipient",
               requeue=lambda store, _, ids: store.outbox_requeue(ids),
               purge=lambda store, before: store.outbox_purge(before=before),
               purged="sent and dead rows")


def register(sub: argparse._SubParsersAction) -> None:
    register_queue(sub, OUTBOX)
