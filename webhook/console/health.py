"""The Health page's checks and headline figures, read from the store and the rules: what an
operator looks at first when replies stop arriving."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from webhook.routing.live import LiveRouter

if TYPE_CHECKING:
    from webhook.console.base import Parts

__all__ = ["checks", "figures", "BACKLOG"]

BACKLOG = 1000   # pushes waiting for the delivery process past which it is not keeping up


def checks(parts: Parts) -> list[tuple[str, bool, str]]:
    """(what, whether it is well, in words)."""
    found = []
    started = time.monotonic()
    try:
        parts.store.outbox_stats()
        found.append(("store", True, f"answers in {(time.monotonic() - started) * 1000:.0f} ms"))
    except Exception as exc:   # what the page is for: say it, do not fail with it
        found.append(("store", False, f"{type(exc).__name__}: {exc}"))
        return found
    router = parts.router
    error = router.error if isinstance(router, LiveRouter) else None
    found.append(("rules", error is None, "loaded" if error is None else
                  f"the last edit was refused: {error}"))
    waiting = parts.store.inbox_waiting()
    found.append(("delivery", waiting < BACKLOG,
                  f"{waiting} pushes wait for the delivery process"))
    dead_pushes, dead_replies = parts.store.inbox_stats()["dead"], \
        parts.store.outbox_stats()["dead"]
    found.append(("pushes", dead_pushes == 0, f"{dead_pushes} set aside as dead "
                  "(wxpush inbox list --state dead)"))
    found.append(("replies", dead_replies == 0, f"{dead_replies} dead (see Replies)"))
    return found


def figures(parts: Parts) -> list[tuple[str, str]]:
    server = parts.settings.server
    store = parts.store
    outbox = store.outbox_stats()
    inbox = store.inbox_stats()
    days = server.history_days
    return [("store", _where(server.store)),
            ("apps", ", ".join(parts.settings.apps)),
            ("replies", ", ".join(f"{n} {state}" for state, n in outbox.items())),
            ("pushes", f"{inbox['pending']} pending, {inbox['dead']} dead, "
                       f"{store.inbox_waiting()} waiting in the journal"),
            ("history", f"kept {days} days" if days else "off (history_days = 0)"),
            ("senders", str(server.senders))]


def _where(url: str) -> str:
    if url.startswith("sqlite:"):
        return url
    from webhook.store.redis import mask_url   # a Redis store: redis is installed

    return mask_url(url)
