"""Composition root: ``create_app`` and ``create_background`` take their parts; ``get_app``
alone builds them from the environment (``WXPUSH_CONFIG``, ``WXPUSH_RUN_DIR``) and is what
gunicorn loads (``webhook.server.app:get_app()``); ``parts`` builds them for ``wxpush
deliver``."""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Callable

import falcon

from webhook.config.settings import Settings, config_path, load
from webhook.console import register as register_console
from webhook.delivery.background import Background
from webhook.delivery.handling import Responder
from webhook.delivery.heartbeat import BeatFile, Heartbeat
from webhook.delivery.history import History
from webhook.delivery.intake import Intake
from webhook.delivery.sender import Sender
from webhook.miniprogram.bridge import register as register_bridge
from webhook.miniprogram.endpoints import register as register_miniprogram
from webhook.miniprogram.files import register as register_files
from webhook.routing.live import LiveRouter
from webhook.routing.router import Router
from webhook.server.exposition import MetricsResource, QueueCollector, totals
from webhook.server.readiness import DeliveryCheck, Readiness, ReadyResource, delivery_by_file
from webhook.server.resources import HealthResource, WeChatResource, add_error_handlers
from webhook.server.rundir import BEAT_FILE
from webhook.server.tokenservice import register as register_token_service
from webhook.store import Store, open_store, require_durable
from webhook.store.base import lease_owner
from webhook.wechat.api import WeChatAPI
from webhook.wechat.client import POOL_SIZE, WeChatClient
from webhook.wechat.tokens import TokenProvider

__all__ = ["WxpushApp", "create_app", "create_background", "get_app", "load_router", "parts"]

log = logging.getLogger(__name__)
# A request thread waiting for the GIL waits up to this long while another holds it. Python's
# 5 ms default queues answers behind each other under load; 1 ms keeps the tail of the answer
# time short for a few extra switches a second.
SWITCH_INTERVAL = 0.001


class WxpushApp(falcon.App):
    """The Falcon app of a request worker, with its rules reloader (started by gunicorn's
    ``post_worker_init``). Pushes are handled by the delivery process, never here."""

    live: LiveRouter | None
    store: Store
    #: Paths whose requests wait on nothing but the CPU, which the worker may answer on its
    #: own loop (webhook/server/fairworker.py): the push path when recording it is local (a
    #: read and a copy into a file), not when it is a round trip to Redis; never the mini
    #: program's, which call WeChat.
    inline_paths: tuple[str, ...]
    #: The largest request body taken, on any path: the worker refuses a larger one (413)
    #: before reading it.
    max_body: int
    #: The process that built the app.
    pid: int

    def start(self) -> None:
        # The one check for a fork: gunicorn builds the app in each worker, after the fork
        # (preload_app = False). Built before it (gunicorn --preload), every worker would
        # write the same journal file and share the store's connections and locks.
        if os.getpid() != self.pid:
            raise RuntimeError("the app was built before the fork: run gunicorn without "
                               "--preload (wxpush's gunicorn.conf.py sets preload_app = False)")
        sys.setswitchinterval(SWITCH_INTERVAL)
        if self.live is not None:
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()


def _current(router: Router | LiveRouter) -> Callable[[], Router]:
    return (lambda: router.current) if isinstance(router, LiveRouter) else (lambda: router)


def create_background(settings: Settings, *, store: Store, api: WeChatAPI,
                      router: Router | LiveRouter, clock: Callable[[], float] = time.time,
                      rng: random.Random | None = None, owner: str | None = None,
                      heartbeat: Heartbeat | None = None,
                      history: History | None = None) -> Background:
    """The work done after the answer, in the delivery process: handlers, senders
    (``heartbeat``: told of its progress; ``history``: what the console shows, noted as
    pushes are handled and replies sent)."""
    rng = rng or random.SystemRandom()
    owner = owner or lease_owner()
    server = settings.server
    lease = float(server.lease)
    responder = Responder(store=store, router=_current(router), owner=owner, clock=clock,
                          budget=server.handler_budget, api=api, log_content=server.log_content,
                          history=history)
    sender = Sender(store=store, api=api, owner=owner, clock=clock, rng=rng, lease=lease,
                    max_attempts=server.send_attempts, base_delay=server.retry_delay,
                    history=history)
    return Background(store=store, responder=responder, sender=sender, owner=owner, lease=lease,
                      senders=server.senders, handler_threads=server.handler_threads,
                      handle_attempts=server.handle_attempts, heartbeat=heartbeat)


def create_app(settings: Settings, *, store: Store, api: WeChatAPI,
               router: Router | LiveRouter, clock: Callable[[], float] = time.time,
               rng: random.Random | None = None, delivery: DeliveryCheck | None = None,
               allow_volatile: bool = False) -> WxpushApp:
    """Wire the request path; nothing here reads the environment. ``delivery``: how
    ``/readyz`` tells the delivery process makes progress (None: it does not ask)."""
    server = settings.server
    intake = Intake(store=store, router=_current(router), clock=clock,
                    rng=rng or random.SystemRandom(), dedupe_ttl=server.dedupe_ttl)
    app = WxpushApp(media_type=falcon.MEDIA_TEXT)
    app.store, app.pid, app.max_body = store, os.getpid(), server.max_body
    history = History(store, days=server.history_days, clock=clock)
    app.live = router if isinstance(router, LiveRouter) else None
    app.inline_paths = ("/healthz",) if store.remote else ("/wechat/", "/healthz")
    add_error_handlers(app)
    app.add_route("/wechat/{appid}", WeChatResource(settings=settings, intake=intake,
                                                    clock=clock))
    app.add_route("/healthz", HealthResource())
    readiness = Readiness(
        store=store, rules=app.live, delivery=delivery, backlog_age=server.ready_backlog_age,
        dead_letters=server.ready_dead_letters, clock=clock,
        allow_volatile=allow_volatile or server.allow_volatile_redis)
    app.add_route("/readyz", ReadyResource(readiness))
    queues = QueueCollector(store.backlog, clock)
    if server.metrics == "on":
        app.add_route("/metrics", MetricsResource(queues))
    register_miniprogram(app, settings=settings, api=api, store=store, clock=clock)
    register_bridge(app, settings=settings, api=api, store=store, clock=clock)
    register_files(app, settings=settings, api=api, store=store, clock=clock)
    register_token_service(app, settings=settings, tokens=api.tokens, clock=clock)
    register_console(app, settings=settings, store=store, api=api, router=router,
                     history=history, clock=clock, readiness=readiness.checks,
                     totals=lambda: totals(queues))
    return app


def load_router(settings: Settings) -> LiveRouter:
    """The handlers in their stated order (``handlers.build_router``), reloaded on change."""
    from handlers import build_router

    server = settings.server
    return LiveRouter(lambda: build_router(server.rules, server.routers, config=settings.path),
                      server.rules)


def parts(settings: Settings, *, allow_volatile: bool = False
          ) -> tuple[Store, WeChatAPI, LiveRouter]:
    """The store, the WeChat API (client and shared token) and the live router of a process
    (a store that would lose answered pushes in a restart refused, unless ``allow_volatile``
    or ``[server] allow_volatile_redis``)."""
    store = open_store(settings.server.store)
    require_durable(store, settings.server.store,
                    allow_volatile=allow_volatile or settings.server.allow_volatile_redis)
    client = WeChatClient(settings.server.api_base,
                          connections=POOL_SIZE + settings.server.senders)
    tokens = TokenProvider(store, client, settings.apps, endpoint=settings.server.token_endpoint,
                           refresh_ahead=settings.server.token_refresh_ahead)
    return store, WeChatAPI(client, tokens, store), load_router(settings)


def get_app(config: str | None = None) -> WxpushApp:
    """Build everything from ``WXPUSH_CONFIG`` (or ``config``); the only reader of the
    environment. ``WXPUSH_ALLOW_VOLATILE_REDIS=1`` is ``wxpush serve --allow-volatile-redis``;
    ``WXPUSH_RUN_DIR`` the run directory of ``wxpush serve``, where its supervisor notes the
    delivery process's progress for ``/readyz``."""
    settings = load(config_path(config))
    for app in settings.apps.values():
        if app.mode == "plaintext":
            log.warning("app %s uses plaintext mode: push bodies are not authenticated; "
                        "choose safe mode in the console", app.appid)
    volatile = os.environ.get("WXPUSH_ALLOW_VOLATILE_REDIS") == "1"
    store, api, router = parts(settings, allow_volatile=volatile)
    run = os.environ.get("WXPUSH_RUN_DIR")
    delivery = run and delivery_by_file(BeatFile(os.path.join(run, BEAT_FILE)),
                                        settings.server.stall_timeout)
    return create_app(settings, store=store, api=api, router=router, delivery=delivery or None,
                      allow_volatile=volatile)
