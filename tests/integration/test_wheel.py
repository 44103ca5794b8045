"""wxpush as a user installs it: a wheel built from the source, installed in a virtualenv of
its own, ``wxpush serve`` and ``wxpush demo`` run from an empty directory (no checkout, no
gunicorn.conf.py anywhere near)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from webhook.testing.processes import kill, tree

from demo_steps import assert_demo_steps
from harness import AES_KEY, APPID, ROOT, SECRET, TOKEN, free_port

pytestmark = pytest.mark.slow

# What the wheel is built from: the project card's packages and their metadata.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "webhook", "handlers")


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A virtualenv with the wheel of this checkout installed (its dependencies seen from
    the system's site-packages, as nothing is downloaded here)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"           # a copy: pip builds in the tree it is given
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", work / "dist", source, cwd=work)
    (wheel,) = (work / "dist").glob("wxpush-*.whl")
    env = work / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env, cwd=work)
    run(env / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", wheel,
        cwd=work)
    return env


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WXPUSH_CONFIG")}


def test_wxpush_demo_from_an_installed_wheel_shows_every_step(venv, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = clean_env()
    where = run(venv / "bin" / "python", "-c", "import webhook; print(webhook.__file__)",
                cwd=empty, env=env)
    examples = Path(where.strip()).parent / "examples"      # the wheel's package data
    assert examples.is_relative_to(venv), where
    out = run(venv / "bin" / "wxpush", "demo", cwd=empty, env=env)       # exit 0
    assert_demo_steps(out, examples)
    assert "next      wxpush serve --config wxpush.toml: your own server" in out   # no checkout
    assert list(empty.iterdir()) == []


def test_wxpush_serve_from_an_installed_wheel_answers(venv, emulator, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = clean_env()
    where = run(venv / "bin" / "python", "-c", "import webhook; print(webhook.__file__)",
                cwd=empty, env=env)
    assert where.startswith(str(venv)), where               # the wheel's, not the checkout's
    shop = tmp_path / "shop"
    shop.mkdir()
    config = shop / "wxpush.toml"
    config.write_text(f'[server]\napi_base = "{emulator.url}"\nstore = "sqlite:///shop.db"\n\n'
                      f'[[apps]]\nappid = "{APPID}"\nsecret = "{SECRET}"\ntoken = "{TOKEN}"\n'
                      f'encoding_aes_key = "{AES_KEY}"\n', encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([venv / "bin" / "wxpush", "serve", "--config", config,
                                   "--bind", url.removeprefix("http://")],
                                  cwd=empty, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 45
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if requests.get(f"{url}/healthz", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert f"wxpush serve: {url} (" in log.read_text()
        assert list(empty.iterdir()) == []
    finally:
        processes = tree(server.pid)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            kill(processes)
            server.wait(5)
