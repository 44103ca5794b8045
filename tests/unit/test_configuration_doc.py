"""docs/configuration.md lists every [server] and [[apps]] key with the code's own default,
and every WXPUSH_* variable the code reads: the page cannot fall behind the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from webhook.config.settings import _APP_KEYS, _SERVER_KEYS, ServerConfig

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `([^`]+)` \|([^|]*)\|", re.MULTILINE)
ROWS = dict(ROW.findall(DOC))


def toml(value: object) -> str:
    """A default as the page writes it: as TOML would."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(item) for item in value) + "]"
    return repr(value)


@pytest.mark.parametrize("key", sorted(_SERVER_KEYS))
def test_every_server_key_is_listed_with_its_default(key):
    assert key in ROWS, f"docs/configuration.md has no row for [server] {key}"
    assert ROWS[key].strip() == f"`{toml(getattr(ServerConfig(), key))}`"


@pytest.mark.parametrize("key", sorted(_APP_KEYS))
def test_every_app_key_is_listed(key):
    assert key in ROWS, f"docs/configuration.md has no row for [[apps]] {key}"


def test_every_environment_variable_the_code_reads_is_listed():
    sources = [*ROOT.joinpath("webhook").rglob("*.py"), ROOT / "gunicorn.conf.py"]
    names = {name for path in sources
             for name in re.findall(r"WXPUSH_[A-Z_]+[A-Z]", path.read_text(encoding="utf-8"))}
    assert "WXPUSH_CONFIG" in names
    assert sorted(names - set(ROWS)) == []
