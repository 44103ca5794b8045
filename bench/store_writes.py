"""Writes of the SQLite store when processes take turns on its lock file.

Prints (1) commits a second of two processes each writing flat out from four threads, and
(2) how long single writes of one process take while another writes flat out (the shape of a
login's session write beside a delivery process). Run it from the checkout to measure:
``python bench/store_writes.py [--seconds 3] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from webhook.store.sqlite import SqliteStore  # noqa: E402

THREADS = 4


def flat_out(path: str, until: float, counts: multiprocessing.Queue) -> None:
    """Write from THREADS threads until ``until`` (time.time); put how many were written."""
    store = SqliteStore(path)
    written = [0] * THREADS

    def run(thread: int) -> None:
        while time.time() < until:
            store.put(f"{os.getpid()}:{thread}:{written[thread] % 1000}", "v" * 100)
            written[thread] += 1

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    counts.put(sum(written))


def throughput(seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        SqliteStore(path).close()
        counts = context.Queue()
        until = time.time() + 1 + seconds   # a second to start the processes
        writers = [context.Process(target=flat_out, args=(path, until, counts)) for _ in range(2)]
        for writer in writers:
            writer.start()
        total = sum(counts.get() for _ in writers)
        for writer in writers:
            writer.join()
    return total / seconds


def single_writes(seconds: float) -> list[float]:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        store = SqliteStore(path)
        until = time.time() + 1 + seconds
        counts = context.Queue()
        writer = context.Process(target=flat_out, args=(path, until, counts))
        writer.start()
        time.sleep(1)
        spent = []
        while time.time() < until - 0.2:
            started = time.perf_counter()
            store.put("session", "x")
            spent.append(time.perf_counter() - started)
            time.sleep(0.005)
        counts.get()
        writer.join()
        store.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates = [throughput(args.seconds) for _ in range(args.rounds)]
    print(f"two processes x {THREADS} threads writing: median {statistics.median(rates):,.0f} "
          f"writes/s (min {min(rates):,.0f}, max {max(rates):,.0f}, {args.rounds} rounds)")
    spent = sorted(s for _ in range(args.rounds) for s in single_writes(args.seconds))
    print(f"single writes beside one writing flat out: {len(spent)} writes, "
          f"p50 {spent[len(spent) // 2] * 1000:.2f} ms, "
          f"p99 {spent[int(len(spent) * 0.99)] * 1000:.2f} ms, max {spent[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
