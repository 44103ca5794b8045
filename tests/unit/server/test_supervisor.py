"""``wxpush serve``'s supervisor with stand-in processes: the delivery process is started
again when it dies, signals reach the right process, and everything stops together."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from webhook.delivery.heartbeat import BeatFile

ROOT = Path(__file__).parents[3]

# A stand-in for gunicorn or the delivery process: notes what happens to it in a log file.
FAKE = """
import os, signal, sys, time
log, code, life, ignore_term = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def note(what):
    with open(log, "a") as f:
        f.write(f"{what} {os.getpid()} {time.monotonic():.3f}\\n")
def on(signum, _):
    note(signal.Signals(signum).name)
    if signum != signal.SIGHUP and ignore_term != "1":
        sys.exit(code)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on)
note("start")
beats = int(sys.argv[-1]) if sys.argv[-2] == "--heartbeat-fd" else None
end = time.monotonic() + life
while time.monotonic() < end:
    if beats is not None:
        os.write(beats, b".")
    time.sleep(0.05)
sys.exit(code)
"""

DRIVER = """
import json, sys
from webhook.delivery.heartbeat import BeatFile
from webhook.server.supervisor import Supervisor
a = json.loads(sys.argv[1])
def gone(pid):
    with open(a["gone"], "a") as f:
        f.write(f"{pid}\\n")
sys.exit(Supervisor(a["server"], [a["delivery"]] * a["deliveries"], graceful=a["graceful"], poll=0.02,
                    first_delay=a["first_delay"], stall=a["stall"],
                    progress=BeatFile(a["beats"]).note, gone=gone).run())
"""


class Run:
    def __init__(self, tmp_path: Path, *, server_life: float = 60, server_code: int = 0,
                 delivery_life: float = 60, delivery_code: int = 0, ignore_term: bool = False,
                 graceful: float = 5.0, first_delay: float = 0.05,
                 stall: float | None = None, deliveries: int = 1) -> None:
        fake = tmp_path / "fake.py"
        fake.write_text(FAKE, encoding="utf-8")
        self.server_log, self.delivery_log = tmp_path / "server.log", tmp_path / "delivery.log"
        argv = {"server": [sys.executable, str(fake), str(self.server_log), str(server_code),
                           str(server_life), "0"],
                "delivery": [sys.executable, str(fake), str(self.delivery_log),
                             str(delivery_code), str(delivery_life), "1" if ignore_term else "0"],
                "graceful": graceful, "first_delay": first_delay, "stall": stall,
                "deliveries": deliveries,
                "beats": str(tmp_path / "beats"), "gone": str(tmp_path / "gone")}
        self.beats, self.gone = BeatFile(str(tmp_path / "beats")), tmp_path / "gone"
        self.process = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(argv)],
                                        cwd=ROOT, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def events(log: Path) -> list[tuple[str, int, float]]:
        if not log.exists():
            return []
        return [(what, int(pid), float(at)) for what, pid, at in
                (line.split() for line in log.read_text().splitlines())]

    def wait(self, log: Path, what: str, count: int = 1, timeout: float = 20) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            pids = [pid for event, pid, _ in self.events(log) if event == what]
            if len(pids) >= count:
                return pids
            assert time.monotonic() < deadline, f"{log.name}: {self.events(log)}"
            time.sleep(0.02)

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        try:
            _, err = self.process.communicate(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        return self.process.returncode, err


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"


def test_a_killed_delivery_process_is_started_again_and_sigterm_stops_both(tmp_path):
    run = Run(tmp_path)
    server, first = run.wait(run.server_log, "start")[0], run.wait(run.delivery_log, "start")[0]
    os.kill(first, signal.SIGKILL)
    second = run.wait(run.delivery_log, "start", 2)[1]
    assert second != first
    run.process.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert code == 0
    assert run.wait(run.server_log, "SIGTERM") == [server]
    assert run.wait(run.delivery_log, "SIGTERM") == [second]
    assert not alive(server) and not alive(second)
    assert "delivery process exited code=-9" in err


def test_each_of_several_delivery_processes_is_started_again_alone_and_sigterm_stops_all(
        tmp_path):
    run = Run(tmp_path, deliveries=3)
    first = run.wait(run.delivery_log, "start", 3)
    assert len(set(first)) == 3
    os.kill(first[1], signal.SIGKILL)
    again = run.wait(run.delivery_log, "start", 4)[3]
    assert again not in first
    assert all(alive(pid) for pid in (first[0], first[2], again))
    run.process.send_signal(signal.SIGTERM)
    assert run.finish()[0] == 0
    assert sorted(run.wait(run.delivery_log, "SIGTERM", 3)) == sorted([first[0], first[2], again])
    assert not any(alive(pid) for pid in (*first, again))
    assert sorted(run.gone.read_text().split()) == sorted(map(str, (*first, again)))


def test_when_gunicorn_exits_the_delivery_process_is_stopped_and_its_code_returned(tmp_path):
    run = Run(tmp_path, server_life=1.0, server_code=3)
    delivery = run.wait(run.delivery_log, "start")[0]
    code, _ = run.finish()
    assert code == 3
    assert run.wait(run.delivery_log, "SIGTERM") == [delivery]


def test_gunicorn_killed_by_a_signal_is_exit_code_128_plus_the_signal(tmp_path):
    run = Run(tmp_path)
    server = run.wait(run.server_log, "start")[0]
    run.wait(run.delivery_log, "start")
    os.kill(server, signal.SIGKILL)
    assert run.finish()[0] == 128 + signal.SIGKILL


def test_sighup_reloads_gunicorn_and_restarts_the_delivery_process(tmp_path):
    run = Run(tmp_path)
    server, first = run.wait(run.server_log, "start")[0], run.wait(run.delivery_log, "start")[0]
    run.process.send_signal(signal.SIGHUP)
    assert run.wait(run.server_log, "SIGHUP") == [server]
    assert run.wait(run.delivery_log, "SIGTERM") == [first]
    assert run.wait(run.delivery_log, "start", 2)[1] != first
    run.process.send_signal(signal.SIGTERM)
    assert run.finish()[0] == 0


def test_a_delivery_process_that_keeps_dying_is_started_less_and_less_often(tmp_path):
    run = Run(tmp_path, delivery_life=0, delivery_code=1, first_delay=0.1)
    run.wait(run.delivery_log, "start", 4)
    run.process.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert code == 0
    starts = [at for what, _, at in run.events(run.delivery_log) if what == "start"]
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert gaps[2] > gaps[0] + 0.3                         # 0.2 s, 0.4 s, 0.8 s, ...
    assert "delivery process exited code=1" in err


@pytest.mark.slow
def test_a_delivery_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    run = Run(tmp_path, ignore_term=True, graceful=0.5)
    run.wait(run.server_log, "start")           # (SIGTERM before its handler would kill it)
    delivery = run.wait(run.delivery_log, "start")[0]
    run.process.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert code == 0
    assert run.wait(run.delivery_log, "SIGTERM") == [delivery]
    assert not alive(delivery)
    assert "did not stop in time: killed" in err


def test_a_delivery_process_that_stops_making_progress_is_killed_and_started_again(tmp_path):
    """One that beats is left alone past the limit; one stopped (SIGSTOP: it still exists,
    but its loops go nowhere) is killed once silent for ``stall`` seconds, and replaced."""
    run = Run(tmp_path, stall=1.0)
    first = run.wait(run.delivery_log, "start")[0]
    time.sleep(2.0)
    assert alive(first)                                   # heartbeats: left alone
    os.kill(first, signal.SIGSTOP)
    stopped = time.monotonic()
    second = run.wait(run.delivery_log, "start", 2)[1]
    assert second != first and time.monotonic() - stopped >= 1.0
    assert not alive(first)
    run.process.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert code == 0
    assert re.search(rf"delivery process pid={first} made no progress for \d+ s: killed", err)
    assert "delivery process exited code=-9" in err


def test_the_delivery_process_s_signs_and_exits_are_told(tmp_path):
    """What the request workers' /readyz reads (its last sign), and whose metrics files go."""
    run = Run(tmp_path, stall=5.0)
    first = run.wait(run.delivery_log, "start")[0]
    deadline = time.monotonic() + 10
    while (run.beats.last() or (0,))[0] != first:
        assert time.monotonic() < deadline, "no sign noted"
        time.sleep(0.02)
    assert run.beats.last()[1] < 2.0
    os.kill(first, signal.SIGKILL)
    second = run.wait(run.delivery_log, "start", 2)[1]
    run.process.send_signal(signal.SIGTERM)
    assert run.finish()[0] == 0
    assert run.gone.read_text().split() == [str(first), str(second)]


def test_a_heartbeat_needs_every_loop_to_go_round():
    """A hung loop withholds the sign, however busy the process's other loops are."""
    from webhook.delivery.heartbeat import Heartbeat
    from webhook.testing.clock import FakeClock

    clock = FakeClock(0)
    read, write = os.pipe()
    os.set_blocking(read, False)
    heartbeat = Heartbeat(write, every=1.0, clock=clock)
    heartbeat.watch(["ingest", "send"])

    def signs() -> int:
        try:
            return len(os.read(read, 100))
        except BlockingIOError:
            return 0

    for _ in range(50):                      # ingest goes round, send hangs
        heartbeat.beat("ingest")
        clock.advance(0.1)
    assert signs() == 0
    heartbeat.beat("send")
    assert signs() == 1
    heartbeat.beat("ingest")
    heartbeat.beat("send")
    assert signs() == 0                      # at most one sign a second
    clock.advance(1.0)
    heartbeat.beat("send")
    heartbeat.beat("ingest")
    assert signs() == 1
    os.close(read)
    os.close(write)
