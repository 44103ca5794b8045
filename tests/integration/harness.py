"""Integration harness: the WeChat emulator on loopback, real gunicorn servers and Debian's
nginx in front of them.

Servers run ``wxpush serve`` (gunicorn with webhook/server/gunicorn_conf.py and the delivery
processes) as a child process on a free loopback port and are stopped by pid
at the end of the test. nginx runs deploy/nginx.conf, its TLS lines swapped for plain HTTP on
another free loopback port, as a child of the test with its files in a temporary directory.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from webhook.testing import Emulator, serve
from webhook.testing.processes import delivery_processes, kill, request_workers, tree

ROOT = Path(__file__).parents[2]
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx2c2769f8efd9abc2"
SECRET = "integration-secret"
TOKEN = "spamtest"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmulatorServer:
    def __init__(self) -> None:
        self.emulator = Emulator()
        self.emulator.register_app(APPID, SECRET)
        self._server = serve(self.emulator.app)
        self.url = self._server.url

    def stop(self) -> None:
        self._server.stop()


class ServerProcess:
    """One ``wxpush serve``: a gunicorn master and its workers, and the delivery processes."""

    def __init__(self, directory: Path, *, store: str, api_base: str, rules: str | None = None,
                 workers: int = 2, mode: str = "safe", fmt: str = "xml", server: str = "",
                 apps: str = "", env: dict[str, str] | None = None) -> None:
        """``server``: lines for [server]; ``apps``: TOML after the app's own keys (more of
        its keys, its [[apps.bridge]], other [[apps]], [[clients]])."""
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.port = directory, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "wxpush.toml"
        self.log = directory / "server.log"
        lines = [f'api_base = "{api_base}"', f'store = "{store}"', server]
        if rules is not None:
            (directory / "rules.toml").write_text(rules, encoding="utf-8")
            lines.append('rules = "rules.toml"')
        self.config.write_text(
            "[server]\n" + "\n".join(lines) + "\n\n[[apps]]\n"
            f'appid = "{APPID}"\nsecret = "{SECRET}"\ntoken = "{TOKEN}"\n'
            f'encoding_aes_key = "{AES_KEY}"\nformat = "{fmt}"\nmode = "{mode}"\n' + apps,
            encoding="utf-8")
        self.workers, self.env, self.redis = workers, env or {}, store.startswith("redis")
        found = re.search(r"^deliveries\s*=\s*(\d+)", server, re.MULTILINE)
        self.deliveries = int(found.group(1)) if found else 2
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, "WXPUSH_LOG_LEVEL": "info", **self.env}
        # The tests' Redis keeps nothing across a restart (and is never restarted).
        volatile = ["--allow-volatile-redis"] if self.redis else []
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webhook.cli", "serve", "--config", str(self.config),
                 "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers), *volatile],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).ok and self._accepting():
                    return self
            except requests.RequestException:   # not listening yet, or a worker still booting
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def _accepting(self) -> bool:
        """Every request worker has loaded the app and takes its share of connections, and
        every delivery process has loaded its rules (an edit after this is a reload for each)."""
        pids, deliveries, logs = self.worker_pids(), self.delivery_pids(), self.logs()
        return len(pids) >= self.workers and len(deliveries) >= self.deliveries and all(
            f"Worker accepting connections (pid: {pid})" in logs for pid in pids) and all(
            f"delivery started pid={pid} " in logs for pid in deliveries)

    def worker_pids(self) -> list[int]:
        """gunicorn's request workers."""
        assert self.process is not None
        return request_workers(self.process.pid)

    def delivery_pids(self) -> list[int]:
        """The delivery processes, running handlers and senders (fewer while one is being
        started again)."""
        assert self.process is not None
        return delivery_processes(self.process.pid)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        processes = tree(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill(processes)
            self.process.wait(5)

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")



def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


NGINX = "/usr/sbin/nginx"
NGINX_MAIN = """daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 2048; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/wxpush.conf;
}}
"""


class NginxProcess:
    """Debian's nginx with the shipped deploy/nginx.conf in front of ``upstream`` (a port on
    127.0.0.1): its listen lines on a free loopback port, its TLS lines gone, all else as
    shipped (timeouts, body cap, buffering, upstream keepalive)."""

    def __init__(self, directory: Path, upstream: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.port = directory, free_port()
        shipped = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
        site = re.sub(r"^\s*listen .*;\n", "", shipped, flags=re.MULTILINE)
        site = re.sub(r"^\s*ssl_.*;\n", "", site, flags=re.MULTILINE)
        site = re.sub(r"^(\s*)server_name ", rf"\1listen 127.0.0.1:{self.port};\n\1server_name ",
                      site, count=1, flags=re.MULTILINE)
        site = re.sub(r"server 127\.0\.0\.1:\d+;", f"server 127.0.0.1:{upstream};", site)
        (directory / "wxpush.conf").write_text(site, encoding="utf-8")
        # As root, nginx's workers would run as nobody, who cannot enter a 0700 temporary dir.
        user = "user root;" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(NGINX_MAIN.format(dir=directory, user=user),
                                              encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> NginxProcess:
        with open(self.directory / "error.log", "ab") as log:
            self.process = subprocess.Popen(
                [NGINX, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf")],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {self.errors()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)    # graceful: workers finish, then exit
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                kill(tree(self.process.pid))
                self.process.wait(5)

    def errors(self) -> str:
        return (self.directory / "error.log").read_text(errors="replace")[-3000:]

