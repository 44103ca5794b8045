"""Reading a server's processes from /proc: the CPU time they used."""

from __future__ import annotations

import subprocess
import sys

from webhook.testing.processes import cpu_seconds

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n" \
       "print('burnt', flush=True)\ntime.sleep(30)"


def test_cpu_seconds_adds_up_the_processes_alive_and_skips_the_gone():
    with subprocess.Popen([sys.executable, "-c", BURN], stdout=subprocess.PIPE) as busy:
        try:
            assert busy.stdout.readline() == b"burnt\n"
            used = cpu_seconds([busy.pid])
            assert 0.3 <= used < 5
            assert cpu_seconds([busy.pid, 2 ** 22 + 1]) >= used   # past pid_max: no such pid
        finally:
            busy.kill()
