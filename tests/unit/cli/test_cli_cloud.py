"""wxpush cloud call|query|upload|link against the emulator, and wxpush clients add: results
printed, bad input in one line with exit 2, the config changed only when it still loads."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from webhook.cli import main
from webhook.config.settings import load
from webhook.testing import Emulator, serve
from webhook.testing.emulator.cloud import DEMO_COLLECTIONS, DEMO_FUNCTIONS

APPID, SECRET, ENV = "wxcli0123456789ab", "the-app-secret", "prod-9"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PUBLIC = f"cloud://{ENV}.7072-{ENV}/public/"


@pytest.fixture
def emulator() -> Iterator[tuple[Emulator, str]]:
    emulator = Emulator()
    emulator.register_app(APPID, SECRET)
    emulator.add_cloud_env(APPID, ENV, functions=DEMO_FUNCTIONS, collections=DEMO_COLLECTIONS)
    with serve(emulator.app) as running:
        yield emulator, running.url


@pytest.fixture
def config(tmp_path, emulator) -> Path:
    path = tmp_path / "wxpush.toml"
    path.write_text(f'[server]\napi_base = "{emulator[1]}"\nstore = "sqlite:///w.db"\n\n'
                    f'[[apps]]\nappid = "{APPID}"\nsecret = "{SECRET}"\ntoken = "t"\n'
                    f'encoding_aes_key = "{KEY}"\ncloud_env = "{ENV}"\nfiles = ["{PUBLIC}"]\n',
                    encoding="utf-8")
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_call_and_query(config, capsys):
    code, out, _ = run(capsys, "cloud", "call", APPID, "orderStatus", "--data",
                       '{"order": "123457"}', "--config", str(config))
    assert code == 0 and json.loads(out) == {"order": "123457", "status": "已发货", "eta": "明天"}
    code, out, _ = run(capsys, "cloud", "query", APPID, "--collection", "faq", "--where",
                       '{"key": "shipping"}', "--limit", "1", "--config", str(config))
    assert code == 0 and json.loads(out)[0]["answer"].startswith("满 99 元包邮")
    code, out, _ = run(capsys, "cloud", "query", APPID, "--collection", "faq", "--count",
                       "--config", str(config))
    assert (code, out.strip()) == (0, "2")
    code, out, _ = run(capsys, "cloud", "query", APPID, "--collection", "faq", "--order-by",
                       "key:desc", "--skip", "1", "--config", str(config))
    assert [r["key"] for r in json.loads(out)] == ["returns"]


def test_upload_then_link(config, capsys, tmp_path, emulator):
    local = tmp_path / "menu.png"
    local.write_bytes(b"\x89PNG menu")
    code, out, _ = run(capsys, "cloud", "upload", APPID, str(local), "public/menu.png",
                       "--config", str(config))
    fileid = f"{PUBLIC}menu.png"
    assert code == 0 and out.splitlines() == [fileid, "permanent link: https://<your host>/files/"
                                                      f"{APPID}/{ENV}.7072-{ENV}/public/menu.png"]
    code, out, _ = run(capsys, "cloud", "link", APPID, fileid, "--max-age", "60",
                       "--config", str(config))
    url = out.splitlines()[0]
    assert code == 0 and requests.get(url, timeout=5).content == b"\x89PNG menu"
    emulator[0].advance(61)
    assert requests.get(url, timeout=5).status_code == 403


@pytest.mark.parametrize("argv, message", [
    (["cloud", "call", APPID, "orderStatus", "--data", "{order"], "--data must be a JSON object"),
    (["cloud", "call", "wxnone", "orderStatus"], "appid wxnone is not configured"),
    (["cloud", "call", APPID, "orderStatus", "--data", '{"order": "10"}'], "errcode=-504002"),
    (["cloud", "call", APPID, "nope"], "errcode=-501000"),
    (["cloud", "query", APPID, "--collection", "faq", "--limit", "0"], "limit() takes"),
    (["cloud", "query", APPID, "--collection", "faq", "--where", "[1]"], "--where must be"),
    (["cloud", "query", APPID, "--collection", "nope"], "errcode=-502005"),
    (["cloud", "upload", APPID, "/no/such/file", "a.png"], "cannot read /no/such/file"),
    (["cloud", "link", APPID, "http://x/y"], "cloud:// file ID"),
    (["cloud", "link", APPID, f"{PUBLIC}none.png"], "no link for"),
])
def test_bad_input_is_one_line_and_exit_2(config, capsys, argv, message):
    code, out, err = run(capsys, *argv, "--config", str(config))
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert SECRET not in err


def test_clients_add_prints_a_key_once_and_keeps_its_hash(config, capsys):
    code, out, _ = run(capsys, "clients", "add", "erp", "--apps", APPID, "--config", str(config))
    assert code == 0
    key = out.splitlines()[2]
    assert re.fullmatch(r"[A-Za-z0-9_\-]{43}", key)
    (client,) = load(config).clients
    assert (client.name, client.apps) == ("erp", (APPID,))
    assert client.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert key not in config.read_text(encoding="utf-8")


@pytest.mark.parametrize("argv, message", [
    (["clients", "add", "erp", "--apps", "wxnone"], "wxnone: not an app of"),
    (["clients", "add", "e r p", "--apps", APPID], "letters, digits"),
    (["clients", "add", "erp", "--apps", ","], "none given"),
])
def test_clients_add_refuses_and_leaves_the_config_as_it_was(config, capsys, argv, message):
    before = config.read_bytes()
    code, out, err = run(capsys, *argv, "--config", str(config))
    assert code == 2 and out == "" and message in err and err.count("\n") == 1
    assert config.read_bytes() == before


def test_clients_add_refuses_a_name_twice(config, capsys):
    assert run(capsys, "clients", "add", "erp", "--apps", APPID, "--config", str(config))[0] == 0
    before = config.read_bytes()
    code, _, err = run(capsys, "clients", "add", "erp", "--apps", APPID, "--config", str(config))
    assert code == 2 and "already in" in err and config.read_bytes() == before


def test_clients_add_restores_a_config_the_table_would_break(config, capsys):
    config.write_text("clients = []\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    before = config.read_bytes()
    code, out, err = run(capsys, "clients", "add", "erp", "--apps", APPID, "--config", str(config))
    assert code == 2 and out == "" and "TOML syntax error" in err
    assert config.read_bytes() == before


def test_check_config_shows_the_cloud_settings(config, capsys):
    config.write_text(config.read_text(encoding="utf-8") + f'\n[[apps]]\nappid = "wxb"\n'
                      f'token = "t"\nencoding_aes_key = "{KEY}"\n[[apps.bridge]]\n'
                      f'app = "{APPID}"\nfunctions = ["orderStatus"]\n', encoding="utf-8")
    assert run(capsys, "clients", "add", "erp", "--apps", f"{APPID},wxb",
               "--config", str(config))[0] == 0
    code, out, _ = run(capsys, "check-config", "--config", str(config))
    assert code == 0
    assert f"cloud    {APPID}: env {ENV}, /files/ serves {PUBLIC}" in out
    assert f"bridge   /apps/wxb/functions/: orderStatus of {APPID}" in out
    assert f"client   erp may read the access_token of {APPID}, wxb" in out
