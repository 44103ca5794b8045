"""The console: the shop's operators see conversations, answer customers the bot could not
help, and repair what went wrong, at ``/console/`` of the server itself.

Off (every ``/console/`` path 404) unless ``[[console.operators]]`` names an operator.
Server-rendered pages with a small script and style sheet served from this package: nothing
from another origin, a strict Content-Security-Policy, every customer text escaped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import falcon

from webhook.config.settings import Settings
from webhook.console import actions, pages, system
from webhook.console.auth import Auth
from webhook.console.base import Check, Parts
from webhook.delivery.history import History
from webhook.routing.live import LiveRouter
from webhook.routing.router import Router
from webhook.store import Store
from webhook.wechat.api import WeChatAPI

__all__ = ["register"]


def register(app: falcon.App, *, settings: Settings, store: Store, api: WeChatAPI,
             router: Router | LiveRouter, history: History,
             readiness: Callable[[], Sequence[Check]], totals: Callable[[], Mapping[str, float]],
             clock: Callable[[], float] = time.time) -> None:
    """Add the console's routes to ``app`` if an operator is configured.
    ``readiness``: /readyz's checks; ``totals``: the metrics, each summed over its labels
    (the Health page shows both)."""
    if not settings.console.operators:
        return
    auth = Auth(store, settings.console, trusted=settings.server.trusted_proxies, clock=clock)
    parts = Parts(settings=settings, store=store, api=api, router=router, history=history,
                  auth=auth, readiness=readiness, totals=totals, clock=clock)
    customer = "/console/conversations/{appid}/{openid}"
    routes = {
        "/console": pages.Home(), "/console/": pages.Home(),
        "/console/login": actions.Login(parts), "/console/logout": actions.Logout(parts),
        "/console/conversations": pages.ConversationsPage(parts),
        "/console/needs-human": pages.NeedsHumanPage(parts),
        customer: pages.ConversationPage(parts),
        "/console/replies": pages.RepliesPage(parts),
        "/console/replies/retry": actions.RetryReplies(parts),
        "/console/replies/purge": actions.PurgeReplies(parts),
        "/console/rules": system.RulesPage(parts),
        "/console/health": system.HealthPage(parts),
        "/console/media/{appid}/{media_id}": system.MediaFile(parts),
        "/console/static/{name}": system.StaticFile(),
    }
    for path, resource in routes.items():
        app.add_route(path, resource)
    acting = actions.Customer(parts)
    for action in ("reply", "image", "handled", "typing"):
        app.add_route(f"{customer}/{action}", acting, suffix=action)
