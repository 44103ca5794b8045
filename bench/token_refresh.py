"""Upstream access_token fetches per refresh window: wxpush's shared provider vs a naive cache.

Scenarios (each process sends 200 replies through the local emulator, 32 at a time):
  redis  2 simulated hosts x 4 processes sharing one redis-server (started here, stopped by pid)
  sqlite 1 host x 4 processes sharing one SQLite file
  naive  the same process counts with a per-process in-memory cache (what most SDKs do)
  locked the same with a lock per process: one fetch at a time, but still one per process
Each runs two windows: a cold cache, then a forced expiry (the emulator jumps 2 h ahead, so
every cached token answers 42001 at once). Run: ``python bench/token_refresh.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

APPID, SECRET = "wxbench000000001", "bench-secret"
SENDS, CONCURRENCY, USERS = 200, 32, 40   # 5 sends per user per window (docs/protocol.md §4.2)
TOKEN_LATENCY = 0.1                       # seconds the emulator takes to issue a token
PHASE_TIMEOUT = 120.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- one process -------------------------------------------------------------------------------

class NaiveCache:
    """A per-process cache as SDKs ship it: a value in memory, refetched when missing, about
    to expire, or refused. ``locked``: one fetch at a time per process (the best a per-process
    cache can do); otherwise no coordination at all. Never across processes or hosts."""

    def __init__(self, client: Any, *, locked: bool) -> None:
        self.client, self.token, self.expires_at = client, None, 0.0
        self.lock = threading.Lock() if locked else None

    def call(self, appid: str, fn: Any) -> Any:
        from webhook.errors import TokenInvalid
        token = self._get()
        try:
            return fn(token)
        except TokenInvalid:
            if self.token == token:
                self.token = None
            return fn(self._get())

    def _get(self) -> str:
        if self.lock is None:
            return self._fetch_if_needed()
        with self.lock:
            return self._fetch_if_needed()

    def _fetch_if_needed(self) -> str:
        token = self.token
        if token is None or time.time() >= self.expires_at - 300:
            grant = self.client.stable_token(appid=APPID, secret=SECRET)
            token, self.expires_at = grant.access_token, time.time() + grant.expires_in
            self.token = token
        return token


def worker(args: argparse.Namespace) -> None:
    """Answer each ``go`` line on stdin with one window of sends; print its outcome as JSON."""
    from webhook.config.settings import AppConfig
    from webhook.errors import WeChatAPIError
    from webhook.wechat.client import WeChatClient
    from webhook.wechat.tokens import TokenProvider

    logging.getLogger("webhook").setLevel(logging.ERROR)   # failures are counted, not logged
    client = WeChatClient(args.base)
    if args.cache in ("naive", "locked"):
        cache: Any = NaiveCache(client, locked=args.cache == "locked")
    else:
        if args.store.startswith("redis"):
            from webhook.store.redis import RedisStore
            store: Any = RedisStore.from_url(args.store, prefix=args.prefix)
        else:
            from webhook.store.sqlite import SqliteStore
            store = SqliteStore(args.store)
        cache = TokenProvider(store, client, {APPID: AppConfig(appid=APPID, token="t",
                                                               secret=SECRET)})

    def send(i: int) -> str:
        user = f"o-{args.name}-{i % USERS}"
        payload = {"msgtype": "text", "text": {"content": f"reply {i}"}}
        try:
            cache.call(APPID, lambda token: client.send(access_token=token, touser=user,
                                                        payload=payload))
            return "ok"
        except WeChatAPIError as exc:
            return f"errcode {exc.errcode}"

    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            outcome = Counter(pool.map(send, range(SENDS)))
        print(json.dumps(outcome), flush=True)


# -- the orchestra -----------------------------------------------------------------------------

class _Server(ThreadingMixIn, WSGIServer):
    """Like ``webhook.testing.serve`` but with a listen backlog for 256 concurrent clients
    (socketserver's default of 5 turns a burst into connection resets)."""

    daemon_threads, request_queue_size = True, 1024


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log."""


def serve_emulator(app: Any) -> tuple[WSGIServer, str]:
    server = make_server("127.0.0.1", 0, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def scenario(emu: Any, base: str, *, label: str, hosts: int, procs: int, cache: str,
             store: str = "", prefix: str = "") -> list[dict[str, Any]]:
    """Start hosts x procs workers, run two windows, return one row per window."""
    names = [f"{label}-h{h}-p{p}" for h in range(hosts) for p in range(procs)]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    workers = [subprocess.Popen(
        [sys.executable, __file__, "--worker", "--base", base, "--cache", cache, "--store", store,
         "--prefix", prefix, "--name", name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=env) for name in names]
    rows = []
    try:
        for proc in workers:
            if _readline(proc, 30).strip() != "ready":
                raise RuntimeError(f"{label}: worker pid {proc.pid} did not start")
        for window in ("cold cache", "forced expiry"):
            if window == "forced expiry":
                emu.advance(7200)     # every issued token is now expired upstream (42001)
            for name in names:
                for i in range(USERS):
                    emu.notify_push(APPID, {"FromUserName": f"o-{name}-{i}", "MsgType": "text"})
            before, started = emu.token_fetches(APPID), time.monotonic()
            for proc in workers:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outcome: Counter[str] = Counter()
            for proc in workers:
                outcome.update(json.loads(_readline(proc, PHASE_TIMEOUT)))
            after = emu.token_fetches(APPID)
            rows.append({"scenario": label, "layout": f"{hosts}x{procs}", "cache": cache,
                         "window": window,
                         "fetches": after["stable_token"] - before["stable_token"],
                         "sent": outcome.pop("ok", 0), "errors": dict(outcome),
                         "seconds": time.monotonic() - started})
    finally:
        for proc in workers:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return rows


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line from a worker, or RuntimeError after ``timeout`` seconds (bounded run)."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        raise RuntimeError(f"worker pid {proc.pid} gave no answer within {timeout:.0f} s")
    return result[0]


def main() -> None:
    from webhook.testing import Emulator

    emu = Emulator(seed=7)
    emu.register_app(APPID, SECRET)
    emu.set_faults(delay_rate=1.0, delay_seconds=TOKEN_LATENCY, paths=("/cgi-bin/stable_token",))
    rows: list[dict[str, Any]] = []
    server, base = serve_emulator(emu.app)
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, redis_url = start_redis(tmp)
        try:
            rows += scenario(emu, base, label="redis", hosts=2, procs=4, cache="shared",
                             store=redis_url, prefix=f"bench:{os.getpid()}:")
            for cache in ("naive", "locked"):
                rows += scenario(emu, base, label="redis", hosts=2, procs=4, cache=cache)
        finally:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
        rows += scenario(emu, base, label="sqlite", hosts=1, procs=4, cache="shared",
                         store=os.path.join(tmp, "bench.db"))
        for cache in ("naive", "locked"):
            rows += scenario(emu, base, label="sqlite", hosts=1, procs=4, cache=cache)
    server.shutdown()
    server.server_close()
    print(f"{SENDS} sends per process, {CONCURRENCY} at a time; emulator token latency "
          f"{TOKEN_LATENCY * 1000:.0f} ms")
    print(f"{'store':7} {'hosts x procs':13} {'cache':7} {'window':14} {'token fetches':>13} "
          f"{'sent':>6} {'time':>7}  errors")
    for row in rows:
        print(f"{row['scenario']:7} {row['layout']:13} {row['cache']:7} {row['window']:14} "
              f"{row['fetches']:>13} {row['sent']:>6} {row['seconds']:>6.2f}s  "
              f"{row['errors'] or '-'}")
    shared = {(r["scenario"], r["window"]): r["fetches"] for r in rows if r["cache"] == "shared"}
    for row in rows:
        if row["cache"] != "shared":
            ours = shared[(row["scenario"], row["window"])]
            print(f"{row['scenario']} {row['window']}: {row['cache']} per-process cache fetched "
                  f"{row['fetches']}x, wxpush {ours}x ({row['fetches'] / max(ours, 1):.0f}x fewer)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for option in ("--base", "--cache", "--store", "--prefix", "--name"):
        parser.add_argument(option, default="", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        worker(options)
    else:
        sys.path.insert(0, ROOT)
        main()
