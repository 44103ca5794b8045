"""Push throughput of a real ``wxpush serve`` against two baselines on the same gunicorn settings.

    python bench/push_throughput.py [--seconds 10] [--slices 5] [--rounds 3] [--connections 32]

Serves encrypted (safe mode) XML text pushes with three servers started by this script from
the project's gunicorn.conf.py (same bind host, workers, worker_class, threads, keepalive:
WXPUSH_WORKERS / WXPUSH_WORKER_CLASS / WXPUSH_THREADS apply to all three):

- floor:    a bare Falcon app answering ``success`` without any check (bench/baselines.py);
- wechatpy: a Falcon app doing wechatpy's check_signature + decrypt_message + parse_message
            (wechatpy is a bench-only dependency: from this interpreter, or pip-installed into
            bench/.venv; the column is skipped if neither works);
- wxpush:   ``wxpush serve`` with its real config: SQLite store (durable inbox), a rules file,
            api_base pointing at the WeChat API emulator served in this process.

wrk (Debian package) drives each in turn with the same load; every request is a distinct push
(bench/pushes.lua walks a file of pre-built pushes), so dedupe never shortcuts the work. A
round gives each server its seconds in short slices, alternating (floor, wechatpy, wxpush,
wechatpy, wxpush, floor, ...): this machine's speed drifts by tens of percent from one
10-second stretch to the next, so the three must share the same stretches to be compared.
A round's figure for a server merges its slices (requests over time; latency percentiles
over all its requests), and a ratio is the median of the rounds' ratios. Then pushes at a
steady rate measure push -> reply sent at the emulator, and the workers' RSS is read from
/proc. Prints figures and PASS/FAIL against the targets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import runpy
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from webhook.store.sqlite import SqliteStore  # noqa: E402
from webhook.testing import Emulator, PushBuilder, serve  # noqa: E402
from webhook.testing.processes import (cpu_seconds, delivery_processes, kill,  # noqa: E402
                                       request_workers, tree)

APPID, SECRET, TOKEN = "wx2c2769f8efd9abc2", "bench-secret", "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
VENV = ROOT / "bench" / ".venv"
TARGET_VS_WECHATPY, TARGET_VS_FLOOR, TARGET_P99_MS, TARGET_REPLY_P99_MS = 1.15, 0.80, 15.0, 250.0
LOADING = 1.5   # seconds for wrk's threads to load their pushes before any of them sends

# Two keyword rules answer; the fallback is off, so only the pushes asking for them get a reply.
RULES = """\
[[rule]]
name = "hours"
keywords = ["营业时间", "几点开门"]
reply.text = "我们的营业时间是每天 9:00-21:00。"

[[rule]]
name = "shipping"
keywords = ["发货", "快递"]
reply.text = "订单付款后 48 小时内发货。"

[builtins.fallback]
enabled = false
"""
ASKS = ("请问你们营业时间是几点？", "我的订单什么时候发货？")
CHATTER = ("你好", "在吗", "谢谢", "好的，明白了", "这个颜色还有吗", "麻烦帮我看一下",
           "收到了，很满意", "嗯嗯", "我再考虑一下")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One gunicorn master (and its workers) on a free loopback port, stopped by pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path,
                 workers: int) -> None:
        self.name, self.argv, self.log, self.workers = name, argv, log, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "WXPUSH_BIND": f"127.0.0.1:{self.port}"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:   # any HTTP answer (the baselines have no /healthz) means a worker is up
                requests.get(self.url + "/healthz", timeout=1)
                if len(self.worker_pids()) >= self.workers:
                    return
            except (requests.ConnectionError, requests.Timeout):   # not up yet, or still loading
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        return request_workers(self.process.pid) if self.process else []

    def rss_mib(self) -> str:
        """Resident memory of each request worker (and of the delivery processes)."""
        def rss(pid: int) -> str:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return f"{int(line.split()[1]) / 1024:.1f}"
            return "?"
        delivery = " ".join(rss(pid) for pid in delivery_processes(self.process.pid))
        return " ".join(rss(pid) for pid in self.worker_pids()) + \
            (f" (delivery {delivery})" if delivery else "")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by every live process of this server."""
        return cpu_seconds(tree(self.process.pid)) if self.process else 0.0

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        processes = tree(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            kill(processes)
            self.process.wait(5)


def wechatpy_python() -> tuple[str | None, str]:
    """An interpreter that can import wechatpy: this one, else bench/.venv (created with
    --system-site-packages, wechatpy pip-installed into it). (None, reason) if neither."""
    probe = ["-c", "import warnings; warnings.simplefilter('ignore'); import wechatpy; "
                   "print(wechatpy.__version__)"]
    found = subprocess.run([sys.executable, *probe], capture_output=True, text=True)
    if found.returncode == 0:
        return sys.executable, f"wechatpy {found.stdout.strip()} (this interpreter)"
    python = VENV / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)],
                           check=True, capture_output=True)
        found = subprocess.run([str(python), *probe], capture_output=True, text=True)
        if found.returncode != 0:
            print("installing wechatpy into bench/.venv (bench only) ...", flush=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "wechatpy"],
                           check=True, capture_output=True, timeout=300)
            found = subprocess.run([str(python), *probe], capture_output=True, text=True)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"cannot install wechatpy into bench/.venv: {exc}"
    if found.returncode != 0:
        return None, f"wechatpy not importable from bench/.venv: {found.stderr.strip()[-200:]}"
    return str(python), f"wechatpy {found.stdout.strip()} (bench/.venv)"


def gunicorn_settings(env: dict[str, str]) -> dict[str, object]:
    """gunicorn.conf.py's values under ``env``, as every server below reads them."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {key: conf[key] for key in ("workers", "worker_class", "threads", "keepalive",
                                       "keepalive_requests")}


def write_pushes(path: Path, builder: PushBuilder, count: int, users: list[str],
                 ask_every: int) -> None:
    """``count`` distinct text pushes (distinct MsgIds); one in ``ask_every`` asks a keyword
    rule (a reply is sent), the rest is chatter no rule answers."""
    base = f"/wechat/{APPID}"
    with open(path, "wb") as out:
        for i in range(count):
            content = ASKS[i // ask_every % 2] if i % ask_every == 0 else CHATTER[i % len(CHATTER)]
            push = builder.text(content, openid=users[i % len(users)])
            target = push.url(base).encode()
            out.write(b"%d %d\n" % (len(target), len(push.body)) + target + push.body)


def run_wrk(server: Server, pushes: Path, *, seconds: float, threads: int,
            connections: int, loading: float = LOADING) -> dict:
    """One wrk run of ``seconds`` (whole seconds), sending from ``loading`` s after its start,
    once every thread has loaded the pushes (bench/pushes.lua); with the servers' CPU time."""
    start = time.time() + loading
    env = {**os.environ, "BENCH_PUSHES": str(pushes), "BENCH_THREADS": str(threads),
           "BENCH_START_US": str(int(start * 1e6))}
    cpu = server.cpu_seconds()
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{math.ceil(loading + seconds)}s",
         "--timeout", "10s", "-s", str(ROOT / "bench" / "pushes.lua"), server.url],
        env=env, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(line[len("BENCH "):])
    result["cpu_s"] = server.cpu_seconds() - cpu
    return result


def wait_drained(db: Path, timeout: float = 180.0) -> float:
    """Seconds until wxpush's delivery processes (handlers, sends) have caught up: no push
    pending (in the journals or the inbox), no reply waiting."""
    started = time.monotonic()
    store = SqliteStore(str(db))
    while time.monotonic() - started < timeout and (
            store.inbox_stats()["pending"] or sum(store.outbox_stats()[state]
                                                  for state in ("pending", "sending"))):
        time.sleep(0.1)
    store.close()
    return time.monotonic() - started


def reply_latency(server: Server, emulator: Emulator, builder: PushBuilder, *, rate: float,
                  seconds: float, asks: tuple[str, ...] = ASKS) -> tuple[list[float], int]:
    """Push -> reply recorded at the emulator, in ms, for pushes paced at ``rate`` per second,
    each from a new user (notified to the emulator first, as WeChat would be) asking a rule
    (``asks`` in turn)."""
    count = int(rate * seconds)
    run = int(time.time())
    users = [f"o6_lat{run:x}_{i:07d}" for i in range(count)]
    pushes = [builder.text(asks[i % len(asks)], openid=user) for i, user in enumerate(users)]
    for push in pushes:
        emulator.notify_push(APPID, push.fields)
    url, local, sent_at, failures = f"{server.url}/wechat/{APPID}", threading.local(), {}, []

    def send(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        push = pushes[i]
        sent_at[users[i]] = time.time()
        answer = session.post(push.url(url), data=push.body, timeout=10,
                              headers={"Content-Type": push.content_type})
        if answer.status_code != 200:
            failures.append(answer.status_code)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        for i in range(count):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, i)
    wanted = set(users)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        replied = {c.body["touser"]: c.time for c in emulator.calls("/cgi-bin/message/custom/send")
                   if isinstance(c.body, dict) and c.body.get("touser") in wanted
                   and c.errcode == 0}
        if len(replied) == count:
            break
        time.sleep(0.2)
    latencies = sorted((replied[u] - sent_at[u]) * 1000 for u in replied)
    return latencies, count - len(latencies) + len(failures)


def merge(runs: list[dict]) -> dict:
    """One figure for a server's slices of a round: requests over the time they took, CPU over
    that time, and latency percentiles of all their requests (each slice's 999 quantiles
    weighted by its request count)."""
    requests = sum(r["requests"] for r in runs)
    seconds = sum(r["active_us"] for r in runs) / 1e6
    points = sorted((q, r["requests"] / len(r["quantiles_us"]))
                    for r in runs for q in r["quantiles_us"])

    def at(fraction: float) -> float:
        total = 0.0
        for value, weight in points:
            total += weight
            if total >= fraction * requests:
                return value / 1000
        return points[-1][0] / 1000

    return {"rps": requests / seconds, "p50": at(0.50), "p99": at(0.99),
            "cores": sum(r["cpu_s"] for r in runs) / seconds}


def notes(name: str, runs: list[dict]) -> str:
    """What a round's runs went through besides answering 200s."""
    text = ""
    non200 = sum(r["non200"] for r in runs)
    if non200:
        statuses = sorted({s for r in runs for s in r["statuses"]})
        text += f"  non-200 {non200} (HTTP {', '.join(statuses)})"
    errors = sum(r[k] for r in runs for k in ("connect", "read", "write", "timeout"))
    text += f"  socket errors {errors}" if errors else ""
    late = sum(r["late_threads"] for r in runs)
    text += f"  ({late} wrk threads loaded late)" if late else ""
    wrapped = sum(r["wrapped"] for r in runs)
    if wrapped:   # only wxpush dedupes; the baselines may cycle
        text += (f"  WRAPPED {wrapped}x (dedupe hit)" if name == "wxpush"
                 else f"  (cycled the pushes {wrapped}x)")
    if name == "wxpush":
        text += f"  background drained in {max(r['drain_s'] for r in runs):.1f} s at most"
    return text


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="load per server and round (default 10)")
    parser.add_argument("--slices", type=int, default=5,
                        help="wrk runs per server and round, alternating (default 5)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up run per server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--pushes-per-second", type=int, default=20_000,
                        help="distinct pushes per second a run may send (default 20,000)")
    parser.add_argument("--users", type=int, default=5_000, help="distinct senders (default 5,000)")
    parser.add_argument("--ask-every", type=int, default=10,
                        help="one push in N asks a keyword rule and gets a reply (default 10)")
    parser.add_argument("--rate", type=float, default=100.0, help="latency run: pushes per second")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk")
        return 2

    work = Path(tempfile.mkdtemp(prefix="wxpush-bench-"))
    env = {**os.environ, "BENCH_APPID": APPID, "BENCH_TOKEN": TOKEN, "BENCH_AES_KEY": AES_KEY}
    settings = gunicorn_settings(env)
    workers = int(settings["workers"])
    conf = str(ROOT / "gunicorn.conf.py")
    servers: dict[str, Server] = {}
    emulator = Emulator()
    emulator.register_app(APPID, SECRET)
    wechat = serve(emulator.app)
    try:
        (work / "rules.toml").write_text(RULES, encoding="utf-8")
        db = work / "wxpush.db"
        (work / "wxpush.toml").write_text(
            f'[server]\napi_base = "{wechat.url}"\nstore = "sqlite:///{db}"\n'
            f'rules = "rules.toml"\n\n[[apps]]\nappid = "{APPID}"\nsecret = "{SECRET}"\n'
            f'token = "{TOKEN}"\nencoding_aes_key = "{AES_KEY}"\nformat = "xml"\n'
            'mode = "safe"\n', encoding="utf-8")
        python, about = wechatpy_python()
        servers["floor"] = Server("floor", [sys.executable, "-m", "gunicorn", "-c", conf,
                                            "bench.baselines:floor()"],
                                  env, work / "floor.log", workers)
        if python is not None:
            servers["wechatpy"] = Server("wechatpy", [python, "-m", "gunicorn", "-c", conf,
                                                      "bench.baselines:wechatpy()"],
                                         env, work / "wechatpy.log", workers)
        servers["wxpush"] = Server("wxpush", [sys.executable, "-m", "webhook.cli", "serve",
                                              "--config", str(work / "wxpush.toml")],
                                   env, work / "wxpush.log", workers)
        print(f"push throughput: {os.cpu_count()} CPUs, gunicorn.conf.py with "
              + ", ".join(f"{k}={v}" for k, v in settings.items())
              + f"; wrk -t{args.threads} -c{args.connections}; per round each server "
              f"{args.slices} x {args.seconds / args.slices:g} s, alternating")
        print(f"  wechatpy baseline: {about if python else 'SKIPPED: ' + about}")
        print(f"  wxpush: safe-mode XML, SQLite store {db}, 2 keyword rules (fallback off); "
              f"1 push in {args.ask_every} gets a reply sent to the emulator; "
              f"{args.users} users, every request a distinct push")
        for server in servers.values():
            server.start()

        # Senders the emulator knows, with an open send window (WeChat saw their messages).
        users = [f"o6_bench_{i:019d}" for i in range(args.users)]
        for user in users:
            emulator.notify_push(APPID, {"FromUserName": user, "MsgType": "text",
                                         "CreateTime": int(time.time())})
        builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)
        order = list(servers)
        slice_seconds = args.seconds / args.slices

        def per_run(warmup: bool) -> int:
            """Pushes for one run, for all the time wrk may send."""
            sending = math.ceil(LOADING + (args.warmup if warmup else slice_seconds)) - LOADING
            return int(args.pushes_per_second * sending)
        rounds: list[dict[str, dict]] = []
        for round_no in range(args.rounds + 1):
            warmup = round_no == 0
            runs: dict[str, list[dict]] = {name: [] for name in order}
            for slice_no in range(1 if warmup else args.slices):
                # Fresh timestamps and MsgIds for every run; the order turns each slice.
                turn = (round_no + slice_no) % len(order)
                for name in order[turn:] + order[:turn]:
                    for _ in range(3):   # a run whose wrk threads did not start together again
                        pushes = work / "pushes.bin"
                        write_pushes(pushes, builder, per_run(warmup), users, args.ask_every)
                        result = run_wrk(servers[name], pushes, threads=args.threads,
                                         connections=args.connections,
                                         seconds=args.warmup if warmup else slice_seconds)
                        pushes.unlink()
                        result["drain_s"] = wait_drained(db) if name == "wxpush" else 0.0
                        time.sleep(0.5)
                        if not result["late_threads"]:
                            break
                    runs[name].append(result)
            label = "warm-up" if warmup else f"round {round_no}"
            merged = {name: merge(rs) for name, rs in runs.items()}
            for name in order:
                m = merged[name]
                print(f"  {label:<8} {name:<9} {m['rps']:8.0f} req/s   p50 {m['p50']:6.2f} ms   "
                      f"p99 {m['p99']:6.2f} ms   server CPU {m['cores']:.2f} cores"
                      f"{notes(name, runs[name])}", flush=True)
            if not warmup:
                rounds.append(merged)

        print(f"\n  {'server':<9} " + "".join(f"{'round ' + str(i + 1):>24}"
                                             for i in range(args.rounds))
              + f"{'median':>24}")
        med = {}
        for name in order:
            cells = [(r[name]["rps"], r[name]["p50"], r[name]["p99"]) for r in rounds]
            med[name] = tuple(statistics.median(c[i] for c in cells) for i in range(3))
            row = "".join(f"{rps:>8.0f} {p50:>6.2f}/{p99:<6.2f}ms".rjust(24)
                          for rps, p50, p99 in [*cells, med[name]])
            print(f"  {name:<9} {row}")
        print("  (cells: req/s  p50/p99 latency; ratios: the median of the rounds' ratios)\n")

        def ratio(other: str) -> float:
            return statistics.median(r["wxpush"]["rps"] / r[other]["rps"] for r in rounds)

        if "wechatpy" in servers:
            vs = ratio("wechatpy")
            print(f"  wxpush / wechatpy  {vs:5.2f}x   target >= {TARGET_VS_WECHATPY:.2f}x  "
                  f"{verdict(vs >= TARGET_VS_WECHATPY)}")
        else:
            print("  wxpush / wechatpy  skipped (wechatpy unavailable)")
        vs = ratio("floor")
        print(f"  wxpush / floor     {vs:5.2f}x   target >= {TARGET_VS_FLOOR:.2f}x  "
              f"{verdict(vs >= TARGET_VS_FLOOR)}")
        p99 = med["wxpush"][2]
        print(f"  wxpush p99        {p99:6.2f} ms  target <= {TARGET_P99_MS:.0f} ms    "
              f"{verdict(p99 <= TARGET_P99_MS)}   (floor {med['floor'][2]:.2f} ms)")

        latencies, missing = reply_latency(servers["wxpush"], emulator, builder,
                                           rate=args.rate, seconds=args.latency_seconds)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        print(f"\n  push -> reply sent at {args.rate:g} pushes/s, {len(latencies)} replies"
              + (f" ({missing} missing or failed)" if missing else "")
              + f": p50 {p50:.1f} ms, p99 {p99:.1f} ms   target p99 <= {TARGET_REPLY_P99_MS:.0f} ms  "
              f"{verdict(p99 <= TARGET_REPLY_P99_MS and not missing)}")
        print("\n  worker RSS after the load (MiB): " + "; ".join(
            f"{name} {server.rss_mib()}" for name, server in servers.items()))
        return 0
    finally:
        for server in servers.values():
            server.stop()
        wechat.stop()
        if args.keep:
            print(f"  logs and store kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
