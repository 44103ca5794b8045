"""``wxpush serve``'s run directory: what the processes it starts share besides the store.

A private directory (0700, made at start, deleted at exit) holding prometheus-client's files
(``metrics/``, one set per process: ``PROMETHEUS_MULTIPROC_DIR``, unless the environment names
a directory of its own, which is then emptied of earlier files at start) and the supervisor's
word on the delivery process (``BEAT_FILE``), which the request workers read for ``/readyz``.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from types import TracebackType

from webhook.delivery.heartbeat import BeatFile

__all__ = ["RunDir", "BEAT_FILE", "METRICS_ENV"]

log = logging.getLogger(__name__)
BEAT_FILE = "delivery.beat"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class RunDir:
    """``metrics``: whether the processes count (``[server] metrics`` not "off"); ``env``:
    the environment ``wxpush serve`` was started with."""

    def __init__(self, *, metrics: bool, env: Mapping[str, str]) -> None:
        self.path = tempfile.mkdtemp(prefix="wxpush-run-")   # 0700
        self.beats = BeatFile(os.path.join(self.path, BEAT_FILE))
        self.metrics: str | None = None
        if metrics:
            self.metrics = env.get(METRICS_ENV) or os.path.join(self.path, "metrics")
            os.makedirs(self.metrics, mode=0o700, exist_ok=True)
            for stale in glob.glob(os.path.join(self.metrics, "*.db")):   # an earlier run's
                os.remove(stale)

    @property
    def env(self) -> dict[str, str]:
        """What the processes ``wxpush serve`` starts are told of it."""
        env = {"WXPUSH_RUN_DIR": self.path}
        if self.metrics is not None:
            env[METRICS_ENV] = self.metrics
        return env

    def gone(self, pid: int) -> None:
        """A process that counted has exited: its live gauges go (its counts stay counted),
        and a delivery process's last sign with it."""
        self.beats.forget(pid)
        if self.metrics is not None:
            from prometheus_client import multiprocess
            multiprocess.mark_process_dead(pid, self.metrics)

    def close(self) -> None:
        if self.metrics is not None and not self.metrics.startswith(self.path + os.sep):
            for stale in glob.glob(os.path.join(self.metrics, "*.db")):
                os.remove(stale)
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
