"""``wxpush serve``'s own process: it starts gunicorn (the master and its request workers)
and one delivery process (``wxpush deliver``: handlers, senders), watches both and stops
them together.

Why a process of its own for delivery: in one process, a handler or a send holds the GIL the
request threads need, and lowering its thread's CPU priority makes that worse (the kernel
then parks a thread that holds the GIL). Apart, the request workers run the request path
alone and the delivery process, at a lower priority, catches up when the answers are out.
A delivery process that dies is started again, soon if it had been running a while, later
(up to ``max_delay``) if it keeps dying; what it had in hand is leased in the store and taken
up again when the lease runs out. One that stops making progress (stopped by a signal, stuck
on a lock or a disk) is killed and started again: its loops report each round through a
pipe (``Heartbeat``), and ``stall`` seconds of silence is the end of it. The loops write it
themselves, so a loop that hangs goes silent even if its process's other threads go on.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# gunicorn's other signals (reload, more or fewer workers, reopen logs): the master's concern.
FORWARD = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGWINCH)


class Supervisor:
    """``server``: gunicorn's command line; ``delivery``: the delivery process's.
    ``graceful``: seconds the delivery process gets
    to finish its in-flight work once asked to stop, before it is killed. ``stall``: seconds
    without a heartbeat after which the delivery process is killed and started again (None:
    not watched); its command line gets ``--heartbeat-fd N``. ``progress(pid)`` is told of
    each sign it gives (the request workers' ``/readyz`` reads it), ``gone(pid)`` of its exit
    (its metrics files are then marked dead)."""

    def __init__(self, server: Sequence[str], delivery: Sequence[str], *,
                 graceful: float, env: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, poll: float = 0.1,
                 first_delay: float = 0.1, max_delay: float = 10.0, steady: float = 10.0,
                 stall: float | None = None, progress: Callable[[int], None],
                 gone: Callable[[int], None]) -> None:
        self._server_argv, self._delivery_argv = list(server), list(delivery)
        self._graceful, self._env, self._clock, self._poll = graceful, env, clock, poll
        self._first_delay, self._max_delay, self._steady = first_delay, max_delay, steady
        self._stall, self._progress, self._gone = stall, progress, gone
        self._server: subprocess.Popen[bytes] | None = None
        self._delivery: subprocess.Popen[bytes] | None = None
        self._beats: int | None = None          # the heartbeat pipe's read end
        self._heard = 0.0                       # when the delivery process last gave a sign
        self._started_at = 0.0
        self._delay = first_delay
        self._restart_at: float | None = None
        self._stopping = False
        self._told: int | None = None           # the delivery pid already sent SIGTERM

    def run(self) -> int:
        """Run until gunicorn exits; its exit code (128 + the signal that killed it)."""
        for signum in STOP:
            signal.signal(signum, self._on_stop)
        for signum in FORWARD:
            signal.signal(signum, self._on_forward)
        self._server = subprocess.Popen(self._server_argv, env=self._env)
        if self._stopping:                      # asked to stop while it was starting
            _signal(self._server, signal.SIGTERM)
        self._start_delivery()
        while True:
            for pid, code in _reap():
                if pid == self._server.pid:
                    self._server.returncode = code
                    self._stop_delivery()
                    return code if code >= 0 else 128 - code
                if self._delivery is not None and pid == self._delivery.pid:
                    self._delivery.returncode = code
                    self._delivery = None
                    self._close_beats()
                    self._gone(pid)
                    self._schedule_restart(code)
            if self._restart_at is not None and self._clock() >= self._restart_at:
                self._start_delivery()
            self._watch_progress()
            time.sleep(self._poll)

    def _start_delivery(self) -> None:
        self._restart_at = None
        if self._stopping:
            return
        if self._stall is None:
            self._delivery = subprocess.Popen(self._delivery_argv, env=self._env)
        else:
            self._beats, write = os.pipe()
            os.set_blocking(self._beats, False)
            try:
                self._delivery = subprocess.Popen(
                    [*self._delivery_argv, "--heartbeat-fd", str(write)], env=self._env,
                    pass_fds=(write,))
            finally:
                os.close(write)   # the child's copy is the only one: EOF when it is gone
        self._started_at = self._heard = self._clock()

    def _watch_progress(self) -> None:
        """Note the delivery process's heartbeats; kill it once silent past ``stall`` (the
        exit is then reaped and it is started again as after any other death)."""
        if self._beats is None or self._delivery is None:
            return
        heard = self._heard
        try:
            while os.read(self._beats, 4096):
                self._heard = self._clock()
        except BlockingIOError:
            pass
        if self._heard != heard:
            self._progress(self._delivery.pid)
        silent = self._clock() - self._heard
        if self._stall is not None and silent > self._stall:
            log.error("delivery process pid=%d made no progress for %.0f s: killed",
                      self._delivery.pid, silent)
            _signal(self._delivery, signal.SIGKILL)   # works on a stopped process too
            self._heard = math.inf                    # once: its exit is reaped next

    def _close_beats(self) -> None:
        if self._beats is not None:
            os.close(self._beats)
            self._beats = None

    def _schedule_restart(self, code: int) -> None:
        if self._stopping:
            return
        ran = self._clock() - self._started_at
        self._delay = self._first_delay if ran >= self._steady \
            else min(self._max_delay, self._delay * 2)
        self._restart_at = self._clock() + self._delay
        log.error("delivery process exited code=%d after %.1f s; starting it again in %.1f s",
                  code, ran, self._delay)

    def _stop_delivery(self) -> None:
        """Ask the delivery process to finish its in-flight work; kill it past the grace."""
        self._stopping = True
        delivery, self._delivery = self._delivery, None
        self._close_beats()
        if delivery is None:
            return
        if delivery.pid != self._told:
            _signal(delivery, signal.SIGTERM)
        deadline = self._clock() + self._graceful + 5
        while self._clock() < deadline:
            if any(pid == delivery.pid for pid, _ in _reap()):
                self._gone(delivery.pid)
                return
            time.sleep(self._poll)
        log.error("delivery process pid=%d did not stop in time: killed", delivery.pid)
        _signal(delivery, signal.SIGKILL)
        os.waitpid(delivery.pid, 0)
        self._gone(delivery.pid)

    def _on_stop(self, signum: int, _frame: object) -> None:
        self._stopping = True
        _signal(self._server, signum)           # TERM: graceful; INT, QUIT: quick
        if self._delivery is not None:
            _signal(self._delivery, signal.SIGTERM)
            self._told = self._delivery.pid

    def _on_forward(self, signum: int, _frame: object) -> None:
        _signal(self._server, signum)
        if signum == signal.SIGHUP and self._delivery is not None:
            # Reload: the delivery process reads the config afresh when it starts again.
            _signal(self._delivery, signal.SIGTERM)
            self._started_at = self._clock() - self._steady


def _reap() -> Iterator[tuple[int, int]]:
    """(pid, exit code) of every child that has exited; a signal's code is its negative."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def _signal(process: subprocess.Popen[bytes] | None, signum: int) -> None:
    if process is not None and process.returncode is None:
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass
