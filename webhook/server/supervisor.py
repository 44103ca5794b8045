"""``wxpush serve``'s own process: it starts gunicorn (the master and its request workers)
and the delivery processes (``wxpush deliver``: handlers, senders), watches them and stops
them together.

Why a process of its own for delivery: in one process, a handler or a send holds the GIL the
request threads need, and lowering its thread's CPU priority makes that worse (the kernel
then parks a thread that holds the GIL). Apart, the request workers run the request path
alone and the delivery process, at a lower priority, catches up when the answers are out.
A process runs one thread at a time (the GIL), so one delivery process uses one core at
most; ``[server] deliveries`` of them share the work through the store, which keeps each
customer's replies in order and each push and reply with one process at a time.
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


class _Delivery:
    """One delivery process's slot: the process, its heartbeat pipe and its restarts."""

    def __init__(self, argv: Sequence[str], first_delay: float) -> None:
        self.argv = list(argv)
        self.process: subprocess.Popen[bytes] | None = None
        self.beats: int | None = None       # the heartbeat pipe's read end
        self.heard = 0.0                    # when it last gave a sign
        self.started_at = 0.0
        self.delay = first_delay
        self.restart_at: float | None = None
        self.told: int | None = None        # the pid already sent SIGTERM

    def close_beats(self) -> None:
        if self.beats is not None:
            os.close(self.beats)
            self.beats = None


class Supervisor:
    """``server``: gunicorn's command line; ``deliveries``: each delivery process's.
    ``graceful``: seconds a delivery process gets
    to finish its in-flight work once asked to stop, before it is killed. ``stall``: seconds
    without a heartbeat after which a delivery process is killed and started again (None:
    not watched); its command line gets ``--heartbeat-fd N``. ``progress(pid)`` is told of
    each sign one gives (the request workers' ``/readyz`` reads it), ``gone(pid)`` of its exit
    (its metrics files are then marked dead)."""

    def __init__(self, server: Sequence[str], deliveries: Sequence[Sequence[str]], *,
                 graceful: float, env: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, poll: float = 0.1,
                 first_delay: float = 0.1, max_delay: float = 10.0, steady: float = 10.0,
                 stall: float | None = None, progress: Callable[[int], None],
                 gone: Callable[[int], None]) -> None:
        self._server_argv = list(server)
        self._deliveries = [_Delivery(argv, first_delay) for argv in deliveries]
        self._graceful, self._env, self._clock, self._poll = graceful, env, clock, poll
        self._first_delay, self._max_delay, self._steady = first_delay, max_delay, steady
        self._stall, self._progress, self._gone = stall, progress, gone
        self._server: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def run(self) -> int:
        """Run until gunicorn exits; its exit code (128 + the signal that killed it)."""
        for signum in STOP:
            signal.signal(signum, self._on_stop)
        for signum in FORWARD:
            signal.signal(signum, self._on_forward)
        self._server = subprocess.Popen(self._server_argv, env=self._env)
        if self._stopping:                      # asked to stop while it was starting
            _signal(self._server, signal.SIGTERM)
        for delivery in self._deliveries:
            self._start(delivery)
        while True:
            for pid, code in _reap():
                if pid == self._server.pid:
                    self._server.returncode = code
                    self._stop_deliveries()
                    return code if code >= 0 else 128 - code
                self._exited(pid, code)
            for delivery in self._deliveries:
                if delivery.restart_at is not None and self._clock() >= delivery.restart_at:
                    self._start(delivery)
                self._watch_progress(delivery)
            time.sleep(self._poll)

    def _start(self, delivery: _Delivery) -> None:
        delivery.restart_at = None
        if self._stopping:
            return
        if self._stall is None:
            delivery.process = subprocess.Popen(delivery.argv, env=self._env)
        else:
            delivery.beats, write = os.pipe()
            os.set_blocking(delivery.beats, False)
            try:
                delivery.process = subprocess.Popen(
                    [*delivery.argv, "--heartbeat-fd", str(write)], env=self._env,
                    pass_fds=(write,))
            finally:
                os.close(write)   # the child's copy is the only one: EOF when it is gone
        delivery.started_at = delivery.heard = self._clock()

    def _watch_progress(self, delivery: _Delivery) -> None:
        """Note a delivery process's heartbeats; kill it once silent past ``stall`` (the
        exit is then reaped and it is started again as after any other death)."""
        if delivery.beats is None or delivery.process is None:
            return
        heard = delivery.heard
        try:
            while os.read(delivery.beats, 4096):
                delivery.heard = self._clock()
        except BlockingIOError:
            pass
        if delivery.heard != heard:
            self._progress(delivery.process.pid)
        silent = self._clock() - delivery.heard
        if self._stall is not None and silent > self._stall:
            log.error("delivery process pid=%d made no progress for %.0f s: killed",
                      delivery.process.pid, silent)
            _signal(delivery.process, signal.SIGKILL)   # works on a stopped process too
            delivery.heard = math.inf                    # once: its exit is reaped next

    def _exited(self, pid: int, code: int) -> None:
        """A delivery process exited: start it again later, unless the server is stopping."""
        delivery = next((d for d in self._deliveries
                         if d.process is not None and d.process.pid == pid), None)
        if delivery is None:
            return
        delivery.process = None
        delivery.close_beats()
        self._gone(pid)
        if self._stopping:
            return
        ran = self._clock() - delivery.started_at
        delivery.delay = self._first_delay if ran >= self._steady \
            else min(self._max_delay, delivery.delay * 2)
        delivery.restart_at = self._clock() + delivery.delay
        log.error("delivery process exited code=%d after %.1f s; starting it again in %.1f s",
                  code, ran, delivery.delay)

    def _stop_deliveries(self) -> None:
        """Ask the delivery processes to finish their in-flight work; kill those still
        running past the grace."""
        self._stopping = True
        running = {}
        for delivery in self._deliveries:
            delivery.close_beats()
            if delivery.process is not None:
                if delivery.process.pid != delivery.told:
                    _signal(delivery.process, signal.SIGTERM)
                running[delivery.process.pid] = delivery.process
                delivery.process = None
        deadline = self._clock() + self._graceful + 5
        while running and self._clock() < deadline:
            for pid, _ in _reap():
                if running.pop(pid, None) is not None:
                    self._gone(pid)
            if running:
                time.sleep(self._poll)
        for pid, process in running.items():
            log.error("delivery process pid=%d did not stop in time: killed", pid)
            _signal(process, signal.SIGKILL)
            os.waitpid(pid, 0)
            self._gone(pid)

    def _on_stop(self, signum: int, _frame: object) -> None:
        self._stopping = True
        _signal(self._server, signum)           # TERM: graceful; INT, QUIT: quick
        for delivery in self._deliveries:
            if delivery.process is not None:
                _signal(delivery.process, signal.SIGTERM)
                delivery.told = delivery.process.pid

    def _on_forward(self, signum: int, _frame: object) -> None:
        _signal(self._server, signum)
        if signum != signal.SIGHUP:
            return
        for delivery in self._deliveries:
            if delivery.process is not None:
                # Reload: a delivery process reads the config afresh when it starts again.
                _signal(delivery.process, signal.SIGTERM)
                delivery.started_at = self._clock() - self._steady


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
