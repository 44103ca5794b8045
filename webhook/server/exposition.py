"""``GET /metrics``: the counts of every process of this server added up, and the store's
queues read at scrape time.

Under ``wxpush serve`` (``PROMETHEUS_MULTIPROC_DIR`` set) the counters of every process,
living or dead since the server started, are read from their files; otherwise this process's
own. The queue gauges are computed from ``Store.backlog()`` when Prometheus asks, so they are
as fresh as the store and cost the scraping worker a few indexed reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from webhook import metrics
from webhook.errors import StoreError
from webhook.logsafe import Repeats
from webhook.store import Backlog

__all__ = ["MetricsResource", "QueueCollector", "exposition", "registry", "totals"]

log = logging.getLogger(__name__)
_repeats = Repeats()


class QueueCollector:
    """Gauges from the store's backlog: how many wait in each queue and for how long, and
    how many were set aside. A store that does not answer leaves them out of the scrape
    (and ``wxpush_store_up`` 0) rather than failing it."""

    def __init__(self, backlog: Callable[[], Backlog], clock: Callable[[], float]) -> None:
        self._backlog, self._clock = backlog, clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("wxpush_store_up", "Whether the store answered this scrape")
        try:
            backlog = self._backlog()
        except StoreError as exc:
            _repeats.log(log, logging.WARNING, "scrape", "metrics: store unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = self._clock()
        length = GaugeMetricFamily("wxpush_queue_length", "Items waiting: journal (pushes "
                                   "not yet in the inbox, SQLite), inbox (pushes not yet "
                                   "handled), outbox (replies not yet sent)", labels=["queue"])
        age = GaugeMetricFamily("wxpush_queue_oldest_age_seconds", "How long the oldest "
                                "waiting item has waited (0: none waits)", labels=["queue"])
        for queue, count, oldest in (("journal", backlog.journal, backlog.journal_oldest),
                                     ("inbox", backlog.inbox, backlog.inbox_oldest),
                                     ("outbox", backlog.outbox, backlog.outbox_oldest)):
            length.add_metric([queue], count)
            age.add_metric([queue], 0.0 if oldest is None else max(0.0, now - oldest))
        dead = GaugeMetricFamily("wxpush_queue_dead", "Items set aside until retried or "
                                 "purged: inbox (pushes), outbox (replies)", labels=["queue"])
        dead.add_metric(["inbox"], backlog.inbox_dead)
        dead.add_metric(["outbox"], backlog.outbox_dead)
        yield from (length, age, dead)


def registry(queues: QueueCollector | None = None) -> CollectorRegistry:
    """What a scrape reads: every process's counters (or this process's) and ``queues``."""
    scrape = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(scrape)
    else:   # a server not run by wxpush serve: this process's instruments
        scrape.register(metrics.REGISTRY)
    if queues is not None:
        scrape.register(queues)
    return scrape


def exposition(queues: QueueCollector | None = None) -> bytes:
    """The text Prometheus reads."""
    return generate_latest(registry(queues))


def totals(queues: QueueCollector | None = None) -> dict[str, float]:
    """Each sample name summed over its labels (``wxpush_pushes_total``: every push of every
    app and outcome), for a page that shows headline figures."""
    sums: dict[str, float] = {}
    for family in registry(queues).collect():
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


class MetricsResource:
    def __init__(self, queues: QueueCollector) -> None:
        self._queues = queues

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = exposition(self._queues)
