"""``wxpush check-config`` checks what ``wxpush serve`` checks before it starts: a config one
refuses, the other refuses with the same line, and check-config says ``ok`` only at the end of
a config serve would start with."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from webhook.cli import main
from webhook.cli.preflight import EXAMPLE_VALUES, placeholders
from webhook.config.settings import load

pytestmark = pytest.mark.slow      # most commands here run in processes of their own

ROOT = Path(__file__).parents[3]
KEY = "0123456789" * 4 + "xyz"
APP = (f'\n[[apps]]\nappid = "wx1"\nsecret = "s3cret-value"\ntoken = "tok"\n'
       f'encoding_aes_key = "{KEY}"\n')


def wxpush(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """The command in a process of its own, as a user runs it (``prelude``: Python run first)."""
    code = f"{prelude}\nimport sys\nfrom webhook.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def refusals(config: Path, prelude: str = "") -> dict[str, str]:
    """What each command prints on stderr, past its name; check-config printed nothing."""
    errors = {}
    for command, extra in (("check-config", []), ("serve", ["--bind", "127.0.0.1:0"])):
        done = wxpush(command, "--config", str(config), *extra, prelude=prelude)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"wxpush {command}: ")
        assert ": ok" not in done.stdout
        errors[command] = done.stderr.removeprefix(f"wxpush {command}: ")
    assert errors["check-config"] == errors["serve"]
    return errors["serve"]


@pytest.fixture
def write(tmp_path):
    def write(server: str, rules: str | None = None) -> Path:
        if rules is not None:
            (tmp_path / "rules.toml").write_text(rules, encoding="utf-8")
        path = tmp_path / "wxpush.toml"
        path.write_text("[server]\n" + server + APP, encoding="utf-8")
        return path
    return write


def test_a_sqlite_url_with_two_slashes_is_the_line_that_has_it(write):
    path = write('store = "sqlite://shop.db"\n')
    assert refusals(path).startswith(f"{path}:2: store: must be a sqlite:///path (three "
                                     "slashes, four for an absolute path)")


def test_a_store_directory_that_does_not_exist(write, tmp_path):
    path = write('store = "sqlite:///data/shop.db"\n')
    assert refusals(path) == (f"sqlite store sqlite:///{tmp_path}/data/shop.db: directory "
                              f"{tmp_path}/data does not exist\n")
    assert not (tmp_path / "data").exists()


def test_an_unreachable_redis(write):
    path = write('store = "redis://127.0.0.1:1/0"\n')
    assert refusals(path).startswith("cannot reach redis store redis://127.0.0.1:1/0: ")


def test_a_redis_url_without_the_redis_package(write):
    """Installed without the redis extra: the redis package cannot be imported."""
    path = write('store = "redis://127.0.0.1:6379/0"\n')
    assert refusals(path, prelude="import sys; sys.modules['redis'] = None") == (
        "a redis:// store needs the redis package, which is not installed: "
        "pip install 'wxpush[redis]'\n")


def test_a_rules_file_with_an_error(write, tmp_path):
    path = write('store = "sqlite:///w.db"\nrules = "rules.toml"\n',
                 rules='[[rule]]\nname = "a"\nregex = "(x"\nreply.text = "b"\n')
    assert refusals(path).startswith(f"{tmp_path / 'rules.toml'}:3: regex: bad regex")


def test_a_router_that_does_not_import(write):
    path = write('store = "sqlite:///w.db"\nrouters = ["nosuchbot:router"]\n')
    assert refusals(path).startswith(f"{path}:3: routers: cannot import router "
                                     "'nosuchbot:router': no module named 'nosuchbot'")


def test_a_bad_log_level(write, monkeypatch):
    monkeypatch.setenv("WXPUSH_LOG_LEVEL", "loud")
    assert refusals(write('store = "sqlite:///w.db"\n')).startswith(
        "environment: WXPUSH_LOG_LEVEL: must be one of")


def test_a_gunicorn_setting_that_is_not_a_number(write, monkeypatch):
    monkeypatch.setenv("WXPUSH_WORKERS", "two")
    assert refusals(write('store = "sqlite:///w.db"\n')) == (
        "environment: a WXPUSH_* variable of gunicorn's is not a number (invalid literal for "
        "int() with base 10: 'two')\n")


def test_ok_is_the_last_line_of_a_config_serve_takes(write, tmp_path):
    (tmp_path / "shopbot.py").write_text(
        "from webhook import Router\nrouter = Router(name='shop')\n", encoding="utf-8")
    path = write('store = "sqlite:///w.db"\nrouters = ["shopbot:router"]\n')
    done = wxpush("check-config", "--config", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"config   {path}: ok"
    assert "routers  shopbot:router" in lines and ": ok" not in "\n".join(lines[:-1])
    assert "s3cret-value" not in done.stdout and KEY not in done.stdout


def test_placeholders_of_the_example_are_warnings(tmp_path, capsys):
    """wxpush.example.toml's secret, token, key and appid are the example's: a server started
    with them answers nothing right."""
    config = tmp_path / "wxpush.toml"
    config.write_text((ROOT / "wxpush.example.toml").read_text(encoding="utf-8"),
                      encoding="utf-8")
    shutil.copytree(ROOT / "webhook" / "examples", tmp_path, dirs_exist_ok=True)  # + images
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "placeholder secret" in out and "secret set" not in out
    warned = [line.split(": ")[1].split()[0] for line in out.splitlines()
              if line.startswith("warning  app wx0123456789abcdef: ")]
    assert warned == list(EXAMPLE_VALUES)       # appid, secret, token, encoding_aes_key
    assert out.splitlines()[-1] == f"config   {config}: ok (4 warnings)"
    for value in EXAMPLE_VALUES.values():
        if value != "wx0123456789abcdef":
            assert value not in out


def test_an_empty_or_replace_with_secret_is_a_warning(tmp_path):
    config = tmp_path / "wxpush.toml"
    config.write_text(f'[[apps]]\nappid = "wx1"\nsecret = "replace-with-it"\ntoken = "t"\n'
                      f'encoding_aes_key = "{KEY}"\n[[apps]]\nappid = "wx2"\nsecret = ""\n'
                      f'token = "t"\nmode = "plaintext"\n', encoding="utf-8")
    assert placeholders(load(config)) == [
        "app wx1: secret is still a placeholder: set the AppSecret (开发 → 开发管理 → "
        "开发设置), or no reply can be sent",
        "app wx2: no secret: pushes are answered, but no reply can be sent (set secret or "
        "secret_env)"]
