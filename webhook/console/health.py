"""The Health page's figures: /readyz's checks, the headline metrics added up over every
process of the server, and the store's queues, as a person reads them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from webhook.store.base import mask_url

if TYPE_CHECKING:
    from webhook.console.base import Parts

__all__ = ["figures", "headlines"]

# (metric sample, what it counts) of the headline metrics
HEADLINES = (
    ("wxpush_pushes_total", "pushes received (WeChat's retries included)"),
    ("wxpush_duplicates_dropped_total", "retries of a recorded push dropped"),
    ("wxpush_rejections_total", "requests refused (bad signature, malformed, too large ...)"),
    ("wxpush_replies_sent_total", "replies WeChat accepted"),
    ("wxpush_sends_total", "calls to WeChat's send API"),
    ("wxpush_dead_letters_total", "replies set aside for good"),
    ("wxpush_token_refreshes_total", "access_token fetches"),
)


def headlines(totals: Mapping[str, float]) -> list[tuple[str, str]]:
    """The headline counts since the server started, and the mean answer time to WeChat."""
    rows = [(label, f"{totals.get(name, 0):.0f}") for name, label in HEADLINES]
    count = totals.get("wxpush_answer_seconds_count", 0)
    if count:
        mean = totals.get("wxpush_answer_seconds_sum", 0) / count * 1000
        rows.append(("mean time to answer a push", f"{mean:.1f} ms"))
    return rows


def figures(parts: Parts) -> list[tuple[str, str]]:
    server = parts.settings.server
    store = parts.store
    outbox = store.outbox_stats()
    inbox = store.inbox_stats()
    days = server.history_days
    return [("store", mask_url(server.store)),
            ("apps", ", ".join(parts.settings.apps)),
            ("replies", ", ".join(f"{n} {state}" for state, n in outbox.items())),
            ("pushes", f"{inbox['pending']} waiting to be handled, {inbox['dead']} dead"),
            ("history", f"kept {days} days" if days else "off (history_days = 0)")]
