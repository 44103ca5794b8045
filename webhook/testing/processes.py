"""The processes of a running server, read from Linux's /proc: gunicorn's request workers and
the delivery process of ``wxpush serve``, for tests and benchmarks that kill, measure or
wait for one of them. ``root`` is the pid of ``wxpush serve`` or of a gunicorn master."""

from __future__ import annotations

import os
import signal
from pathlib import Path

__all__ = ["children", "request_workers", "delivery_processes", "tree", "kill", "connections",
           "cpu_seconds"]


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:   # gone meanwhile
        return []


def _runs(pid: int, word: str) -> bool:
    """Whether ``word`` is one of the arguments ``pid`` was started with."""
    try:
        return word.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def request_workers(root: int) -> list[int]:
    masters = [root] if _runs(root, "gunicorn") else \
        [pid for pid in children(root) if _runs(pid, "gunicorn")]
    return [pid for master in masters for pid in children(master)]


def delivery_processes(root: int) -> list[int]:
    """``wxpush serve``'s delivery process (``wxpush deliver``), if it runs one."""
    return [pid for pid in children(root) if _runs(pid, "deliver")]


def tree(root: int) -> list[int]:
    """``root`` and every process under it."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children(pid)
    return found


def kill(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` still alive: what a server left behind when it would not stop."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) used so far by those of ``pids`` still alive."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:   # gone meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def connections(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections to local ``port`` (IPv4) each of ``pids`` holds:
    how a server's workers share their clients."""
    with open("/proc/net/tcp") as table:
        inodes = {f"socket:[{row[9]}]" for row in (line.split() for line in list(table)[1:])
                  if int(row[1].rpartition(":")[2], 16) == port and row[3] == "01"}
    return {pid: sum(1 for fd in _fds(pid) if fd in inodes) for pid in pids}


def _fds(pid: int) -> list[str]:
    """What each open descriptor of ``pid`` points to (none if it is gone)."""
    found = []
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                found.append(os.readlink(fd))
            except OSError:   # closed meanwhile
                pass
    except OSError:
        pass
    return found
