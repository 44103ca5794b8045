"""Replies per second of a real ``wxpush serve`` while WeChat's API takes its real time to answer.

    python bench/reply_throughput.py [--pushes 10000] [--latencies 0,50,200] [--rate 200]
                                     [--seconds 20] [--redis] [--senders N] [--keep]
                                     [--history-days N] [--handler-threads N]
                                     [--deliveries N]

What a customer sees is the reply, and WeChat's API answers in 20-300 ms (about 50 from a
server in mainland China, 150-300 from abroad): the emulator served in this process adds that
latency to every answer (``set_faults(latency=...)``). Each run starts a fresh ``wxpush serve``
(SQLite store in a temporary directory, a rules file whose one keyword rule every push
matches, ``api_base`` at the emulator) and stops it by pid afterwards.

- burst: N pushes from N customers, each customer's send window opened at the emulator first
  (``notify_push``, as WeChat's own record of the message would), are POSTed as fast as a few
  kept-alive connections allow; the figure is first push sent -> last reply answered by the
  emulator, as replies per second, and the time until every push was answered (the ack
  phase). The pushes are built beforehand and sent by wrk through bench/pushes.lua (each once,
  ``BENCH_ONCE``): a client in C in its own process spends little CPU per push, so the ack
  phase measures the server, and the emulator in this process does not share its GIL with
  the client.
- steady: pushes paced at a fixed rate at 50 ms API latency; push sent -> reply answered by
  the emulator, percentiles.
- ``--redis``: the burst at 50 ms with one and with two ``wxpush serve`` on one redis-server
  (appendonly, started here on a free loopback port); each runs its own delivery processes,
  so two servers should send about twice as fast where the machine has the cores for them.

CPU is read from /proc before and after each burst: the delivery processes' per reply, the
request workers' per push, and this process's (the emulator) per reply. A burst that has
not drained by ``--timeout`` prints what it got. Prints a table and PASS/FAIL against the
targets; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.push_throughput import (AES_KEY, APPID, ASKS, LOADING, SECRET, TOKEN,  # noqa: E402
                                   Server, free_port, percentile, reply_latency, verdict)
from webhook.testing import BuiltPush, Emulator, PushBuilder, serve  # noqa: E402
from webhook.testing.processes import cpu_seconds, delivery_processes  # noqa: E402

SEND = "/cgi-bin/message/custom/send"
ASK = ASKS[0]
RULES = """\
[[rule]]
name = "hours"
keywords = ["营业时间"]
reply.text = "我们的营业时间是每天 9:00-21:00。"

[builtins.fallback]
enabled = false
"""
TARGET_RPS = {0.0: 700.0, 50.0: 500.0, 200.0: 300.0}   # API latency (ms) -> replies/s
TARGET_STEADY_P99_MS, TARGET_REDIS_RATIO, STEADY_LATENCY_MS = 300.0, 1.6, 50.0


@dataclass(frozen=True, slots=True)
class Burst:
    """What one burst gave: pushes acknowledged and when, replies and when, CPU by role."""

    pushes: int
    acked: int
    ack_s: float | None          # first push sent -> last push answered; None: not all were
    replies: int
    last_reply_s: float | None   # first push sent -> last reply answered by the emulator
    refused: int                 # sends the emulator answered with an errcode
    non200: int
    socket_errors: int
    repeated: int                # pushes wrk sent more than once (after a lost connection)
    workers_cpu_s: float
    delivery_cpu_s: float
    emulator_cpu_s: float

    @property
    def rps(self) -> float:
        return self.replies / self.last_reply_s if self.last_reply_s else 0.0


def milliseconds(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected milliseconds like 0,50,200, got {text!r}") from None
    if not values or any(not (math.isfinite(v) and 0 <= v <= 5000) for v in values):
        raise argparse.ArgumentTypeError("latencies are between 0 and 5000 ms")
    return values


def positive(kind: type) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected more than 0, got {text!r}")
        return value
    return parse


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{len(os.sched_getaffinity(0))} CPUs (nproc) of {os.cpu_count()}, {model}, "
            f"{platform.python_implementation()} {platform.python_version()}; "
            f"load average at start {load}")


def write_config(path: Path, *, api_base: str, store: str, senders: int | None,
                 history_days: int | None = None, handler_threads: int | None = None,
                 deliveries: int | None = None) -> None:
    path.write_text(
        f'[server]\napi_base = "{api_base}"\nstore = "{store}"\nrules = "rules.toml"\n'
        + (f"senders = {senders}\n" if senders is not None else "")
        + (f"history_days = {history_days}\n" if history_days is not None else "")
        + (f"handler_threads = {handler_threads}\n" if handler_threads is not None else "")
        + (f"deliveries = {deliveries}\n" if deliveries is not None else "")
        + f'\n[[apps]]\nappid = "{APPID}"\nsecret = "{SECRET}"\ntoken = "{TOKEN}"\n'
        f'encoding_aes_key = "{AES_KEY}"\nformat = "xml"\nmode = "safe"\n', encoding="utf-8")


def start_servers(work: Path, name: str, count: int, *, workers: int) -> list[Server]:
    """``count`` ``wxpush serve`` on free ports with ``work/wxpush.toml``, started."""
    servers = []
    try:
        for i in range(count):
            server = Server(f"{name}-{i}", [sys.executable, "-m", "webhook.cli", "serve",
                                            "--config", str(work / "wxpush.toml"),
                                            "--workers", str(workers)],
                            dict(os.environ), work / f"{name}-{i}.log", workers)
            servers.append(server)
            server.start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def write_records(path: Path, pushes: list[BuiltPush]) -> None:
    """The pushes in bench/pushes.lua's format."""
    base = f"/wechat/{APPID}"
    with open(path, "wb") as out:
        for push in pushes:
            target = push.url(base).encode()
            out.write(b"%d %d\n" % (len(target), len(push.body)) + target + push.body)


def send_once(servers: list[Server], files: list[Path], *, threads: int, connections: int,
              start: float, deadline: float) -> list[dict]:
    """One wrk per server, each sending its file's pushes once from ``start`` (epoch s);
    stopped by pid (SIGINT: it still reports) once every thread has its answers, or at
    ``deadline`` (monotonic). wrk's BENCH summaries."""
    runs = []
    try:
        for server, pushes in zip(servers, files):
            done = pushes.with_suffix(".done")
            env = {**os.environ, "BENCH_PUSHES": str(pushes), "BENCH_THREADS": str(threads),
                   "BENCH_START_US": str(int(start * 1e6)), "BENCH_ONCE": str(done)}
            seconds = math.ceil(deadline - time.monotonic()) + 1
            wrk = subprocess.Popen(
                ["wrk", f"-t{threads}", f"-c{max(threads, connections // len(servers))}",
                 f"-d{seconds}s", "--timeout", "10s", "-s", str(ROOT / "bench" / "pushes.lua"),
                 server.url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            runs.append((wrk, done))
        for wrk, done in runs:
            while time.monotonic() < deadline and wrk.poll() is None:
                if done.exists() and len(done.read_text().split()) >= threads:
                    break
                time.sleep(0.02)
        results = []
        for wrk, _ in runs:
            if wrk.poll() is None:
                wrk.send_signal(signal.SIGINT)
            out, err = wrk.communicate(timeout=30)
            line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
            if line is None:
                raise RuntimeError(f"wrk failed:\n{out}\n{err}")
            results.append(json.loads(line[len("BENCH "):]))
        return results
    finally:
        for wrk, _ in runs:
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait()


def burst(servers: list[Server], emulator: Emulator, work: Path, *, count: int, threads: int,
          connections: int, timeout: float) -> Burst:
    """``count`` pushes from as many new customers, split evenly between ``servers``."""
    builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
    users = [f"o6_burst_{i:08d}" for i in range(count)]
    pushes = [builder.text(ASK, openid=user) for user in users]
    for push in pushes:
        emulator.notify_push(APPID, push.fields)
    files = []
    for i in range(len(servers)):
        files.append(work / f"pushes-{i}.bin")
        write_records(files[-1], pushes[i::len(servers)])
    workers = [pid for server in servers for pid in server.worker_pids()]
    delivery = [pid for server in servers for pid in delivery_processes(server.process.pid)]
    cpu = cpu_seconds(workers), cpu_seconds(delivery), time.process_time()

    start = time.time() + LOADING
    deadline = time.monotonic() + LOADING + timeout
    results = send_once(servers, files, threads=threads, connections=connections, start=start,
                        deadline=deadline)
    while time.monotonic() < deadline and len(emulator.sent(APPID)) < count:
        time.sleep(0.1)
    used = (cpu_seconds(workers) - cpu[0], cpu_seconds(delivery) - cpu[1],
            time.process_time() - cpu[2])
    for path in files:
        path.unlink()
        path.with_suffix(".done").unlink(missing_ok=True)

    wanted = set(users)
    calls = [c for c in emulator.calls(SEND)
             if isinstance(c.body, dict) and c.body.get("touser") in wanted]
    answered = [c.time for c in calls if c.errcode == 0]
    acked = sum(r["answered"] - r["non200"] for r in results)
    return Burst(
        pushes=count, acked=acked,
        ack_s=max(r["finished_us"] for r in results) / 1e6 if acked == count else None,
        replies=len(answered), last_reply_s=max(answered) - start if answered else None,
        refused=len(calls) - len(answered), non200=sum(r["non200"] for r in results),
        socket_errors=sum(r[k] for r in results for k in ("connect", "read", "write", "timeout")),
        repeated=sum(r["wrapped"] for r in results),
        workers_cpu_s=used[0], delivery_cpu_s=used[1],
        emulator_cpu_s=used[2])


def redis_server(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server with appendonly on a free loopback port in ``work``; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: apt-get install -y redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work),
                             "--appendonly", "yes", "--save", "", "--logfile", "redis.log"],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                client.ping()
                return proc, f"redis://127.0.0.1:{port}/0"
            except redis.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    proc.kill()
    proc.wait()
    raise RuntimeError(f"redis-server did not start on port {port}")


def micros(seconds: float | None, per: int) -> str:
    return f"{seconds / per * 1e6:6.0f}" if seconds is not None and per else "     -"


HEAD = (f"  {'':<14}{'acked in':>10}{'replies':>9}{'last reply':>12}{'replies/s':>11}"
        f"{'target':>16}   {'CPU us: workers/push':>20}{'delivery/reply':>16}"
        f"{'emulator/reply':>16}")


def row(label: str, b: Burst, target: float | None) -> str:
    acked = f"{b.ack_s:8.2f} s" if b.ack_s is not None else "-"
    last = f"{b.last_reply_s:10.1f} s" if b.last_reply_s is not None else "         -"
    goal = f">= {target:4.0f} {verdict(b.rps >= target)}" if target is not None else "-"
    notes = []
    if b.acked < b.pushes:
        notes.append(f"ONLY {b.acked} PUSHES ANSWERED 200")
    if b.replies < b.pushes:
        notes.append(f"NOT DRAINED: {b.pushes - b.replies} replies missing")
    if b.refused:
        notes.append(f"{b.refused} sends refused")
    if b.non200 or b.socket_errors:
        notes.append(f"{b.non200} non-200, {b.socket_errors} socket errors")
    if b.repeated:
        notes.append(f"pushes sent again {b.repeated}x")
    delivery = micros(b.delivery_cpu_s, b.replies)
    return (f"  {label:<14}{acked:>10}{b.replies:>9}{last:>12}{b.rps:>11.0f}{goal:>16}   "
            f"{micros(b.workers_cpu_s, b.pushes):>20}{delivery:>16}"
            f"{micros(b.emulator_cpu_s, b.replies):>16}" + ("   " + "; ".join(notes)
                                                         if notes else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=positive(int), default=10_000,
                        help="pushes (and customers) per burst (default 10,000)")
    parser.add_argument("--latencies", type=milliseconds, default=[0.0, 50.0, 200.0],
                        help="API latencies of the bursts, ms (default 0,50,200)")
    parser.add_argument("--rate", type=positive(float), default=200.0,
                        help="steady run: pushes per second (default 200)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="steady run: seconds (default 20; 0 skips it)")
    parser.add_argument("--timeout", type=positive(float), default=120.0,
                        help="seconds a burst may take to drain (default 120)")
    parser.add_argument("--redis", action="store_true",
                        help="also a burst at 50 ms on one and on two servers sharing a Redis")
    parser.add_argument("--senders", type=int, default=None,
                        help="[server] senders (sends in flight at most) for every server "
                             "(default: the server's own)")
    parser.add_argument("--workers", type=positive(int), default=2,
                        help="request workers per server (default 2)")
    parser.add_argument("--connections", type=positive(int), default=8,
                        help="wrk connections in all (default 8)")
    parser.add_argument("--threads", type=positive(int), default=2, help="wrk threads (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and stores")
    parser.add_argument("--handler-threads", type=positive(int), default=None,
                        help="[server] handler_threads for every server (default: the "
                             "server's own)")
    parser.add_argument("--deliveries", type=positive(int), default=None,
                        help="[server] deliveries (delivery processes) for every server "
                             "(default: the server's own)")
    parser.add_argument("--history-days", type=int, default=None,
                        help="[server] history_days for every server (default: the server's "
                             "own; 0 notes no conversation history)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk")
        return 2
    if args.senders is not None and not 1 <= args.senders <= 1024:
        parser.error("--senders is between 1 and 1024")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    if not 0 <= args.seconds <= 3600:
        parser.error("--seconds is between 0 and 3600")

    work = Path(tempfile.mkdtemp(prefix="wxpush-replies-"))
    emulator = Emulator()
    emulator.register_app(APPID, SECRET)
    wechat = serve(emulator.app)
    running: list[Server] = []
    store: subprocess.Popen[bytes] | None = None

    def fresh(name: str, store_url: str | None = None, count: int = 1) -> list[Server]:
        """New servers on a new SQLite store (or ``store_url``) in their own directory."""
        where = work / name
        where.mkdir()
        (where / "rules.toml").write_text(RULES, encoding="utf-8")
        write_config(where / "wxpush.toml", api_base=wechat.url, senders=args.senders,
                     store=store_url or f"sqlite:///{where / 'wxpush.db'}",
                     history_days=args.history_days, handler_threads=args.handler_threads,
                     deliveries=args.deliveries)
        running[:] = start_servers(where, name, count, workers=args.workers)
        return running

    def stop() -> None:
        for server in running:
            server.stop()
        running.clear()

    def one_burst(name: str, latency_ms: float, store_url: str | None = None,
                  count: int = 1) -> Burst:
        """A burst against ``count`` fresh servers, the emulator forgetting the last one."""
        emulator.reset()
        emulator.set_faults(latency=latency_ms / 1000)
        servers = fresh(name, store_url, count)
        try:
            return burst(servers, emulator, work / name, count=args.pushes,
                         threads=args.threads, connections=args.connections,
                         timeout=args.timeout)
        finally:
            stop()

    try:
        print(f"reply throughput: {machine()}")
        print(f"  wxpush serve: {args.workers} request workers, "
              f"senders {args.senders if args.senders is not None else 'default'}, "
              f"history_days {args.history_days if args.history_days is not None else 'default'}, "
              f"handler_threads {args.handler_threads or 'default'}, "
              f"deliveries {args.deliveries or 'default'}, "
              f"safe-mode XML, 1 keyword rule every push matches; emulator in this process; "
              f"wrk -t{args.threads} -c{args.connections}, each push sent once")
        print(f"\n  burst of {args.pushes} pushes from {args.pushes} customers, SQLite store, "
              f"a fresh server for each API latency; times from the first push sent")
        print(HEAD, flush=True)
        for latency_ms in args.latencies:
            result = one_burst(f"burst-{latency_ms:g}ms", latency_ms)
            print(row(f"{latency_ms:g} ms", result, TARGET_RPS.get(latency_ms)), flush=True)

        if args.seconds > 0:
            emulator.reset()
            emulator.set_faults(latency=STEADY_LATENCY_MS / 1000)
            server = fresh("steady")[0]
            builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
            latencies, missing = reply_latency(server, emulator, builder, rate=args.rate,
                                               seconds=args.seconds, asks=(ASK,))
            stop()
            figures = ", ".join(f"{name} {percentile(latencies, q):.0f}" for name, q in
                                (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)))
            p99 = percentile(latencies, 99)
            print(f"\n  steady {args.rate:g} pushes/s for {args.seconds:g} s at "
                  f"{STEADY_LATENCY_MS:g} ms API latency, push sent -> reply answered: "
                  f"{len(latencies)} replies" + (f" ({missing} missing or failed)" if missing
                                                 else "")
                  + f"; {figures} ms   target p99 <= {TARGET_STEADY_P99_MS:.0f} ms "
                  f"{verdict(p99 <= TARGET_STEADY_P99_MS and not missing)}", flush=True)

        if args.redis:
            store, url = redis_server(work)
            print(f"\n  burst of {args.pushes} pushes at {STEADY_LATENCY_MS:g} ms API latency, "
                  f"Redis store (appendonly), one and two servers sharing it")
            print(HEAD, flush=True)
            rates = []
            for count in (1, 2):
                redis.Redis.from_url(url).flushall()
                result = one_burst(f"redis-{count}", STEADY_LATENCY_MS, url, count)
                rates.append(result.rps)
                print(row(f"{count} server{'s' if count > 1 else ''}", result, None), flush=True)
            ratio = rates[1] / rates[0] if rates[0] else float("nan")
            print(f"  two / one {ratio:5.2f}x   target >= {TARGET_REDIS_RATIO:.1f}x "
                  f"{verdict(ratio >= TARGET_REDIS_RATIO)}")
        print("\n  (CPU in us per push or reply, read from /proc over the whole burst; "
              "'emulator' is this whole process: the emulator, wrk's minder, the polling)")
        return 0
    finally:
        stop()
        wechat.stop()
        if store is not None:
            store.terminate()
            try:
                store.wait(10)
            except subprocess.TimeoutExpired:
                store.kill()
                store.wait()
        if args.keep:
            print(f"  logs and stores kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
