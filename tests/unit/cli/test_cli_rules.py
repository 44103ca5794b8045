"""``wxpush rules check`` / ``wxpush rules test``: offline, the server's own decision."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from webhook import cli

EXAMPLE = str(Path(__file__).parents[3] / "rules.example.toml")


@pytest.fixture
def wxpush(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", ("rules",))  # only the module under test

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_check_ok(wxpush):
    code, out, _ = wxpush("rules", "check", EXAMPLE)
    assert code == 0 and "ok, 10 rules: hours, order, vip, menu, shop" in out


def test_check_names_the_line(wxpush, tmp_path):
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nname = "a"\nregex = "(x"\nreply.text = "b"\n', encoding="utf-8")
    code, _, err = wxpush("rules", "check", str(bad))
    assert code == 2 and f"{bad}:3: regex: bad regex" in err


def test_file_defaults_to_the_configs_rules(wxpush, tmp_path):
    (tmp_path / "rules.toml").write_text('[builtins.fallback]\nenabled = false\n', encoding="utf-8")
    config = tmp_path / "wxpush.toml"
    config.write_text('[server]\nrules = "rules.toml"\n', encoding="utf-8")
    code, out, _ = wxpush("rules", "check", "--config", str(config))
    assert code == 0 and "2 rules: builtin.welcome, builtin.handoff" in out
    config.write_text('[server]\n', encoding="utf-8")
    code, _, err = wxpush("rules", "check", "--config", str(config))
    assert code == 2 and "no rules file" in err


def test_test_shows_rule_answer_and_replies(wxpush):
    code, out, _ = wxpush("rules", "test", EXAMPLE, "订单 1234567")
    assert code == 0 and "matched   order" in out and "answer    success" in out
    assert '"content": "订单 1234567 正在处理中。"' in out
    _, out, _ = wxpush("rules", "test", EXAMPLE, "转人工")
    assert "builtin.handoff" in out and "transfer_customer_service" in out and "send      nothing" in out


def test_test_events(wxpush):
    _, out, _ = wxpush("rules", "test", EXAMPLE, "--session-from", "goods")
    assert "matched   goods-button" in out
    _, out, _ = wxpush("rules", "test", EXAMPLE, "--event", "user_enter_tempsession")
    assert "matched   builtin.welcome" in out
    _, out, _ = wxpush("rules", "test", EXAMPLE, "--event", "debug_demo")
    assert "matched   nothing" in out


def test_test_usage(wxpush):
    code, _, err = wxpush("rules", "test", EXAMPLE, "a", "b")
    assert code == 2 and "usage" in err


CLOUD_RULES = """
[[rule]]
name = "order-status"
regex = '^订单\\s*(?P<order>\\d{6,})$'
function = { name = "orderStatus", data = { order = "{order}" } }
reply.text = "订单 {order}：{result.status}"
reply.on_error = "暂时查不到订单 {order}"

[[rule]]
name = "faq"
keywords = ["运费"]
query = { collection = "faq", where = { key = "shipping" }, limit = 1 }
reply.text = "{result[0].answer}"
"""


def test_test_answers_cloud_calls_from_the_flags(wxpush, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(CLOUD_RULES, encoding="utf-8")
    code, out, _ = wxpush("rules", "test", str(rules), "订单 123456",
                          "--function", 'orderStatus={"status": "已发货"}')
    assert code == 0 and 'cloud     orderStatus({"order": "123456"})' in out
    assert '"content": "订单 123456：已发货"' in out
    _, out, _ = wxpush("rules", "test", str(rules), "订单 123456")
    assert '"content": "暂时查不到订单 123456"' in out
    assert "log       rule action failed rule=order-status" in out
    _, out, _ = wxpush("rules", "test", str(rules), "运费?",
                       "--collection", 'faq=[{"key": "shipping", "answer": "包邮"}]')
    assert 'cloud     db.collection("faq").where({"key":"shipping"}).limit(1).get()' in out
    assert '"content": "包邮"' in out


@pytest.mark.parametrize("flag", [["--function", "orderStatus"], ["--function", "f={"],
                                  ["--collection", 'faq={"key": 1}']])
def test_test_refuses_a_bad_stand_in_in_one_line(wxpush, tmp_path, flag):
    rules = tmp_path / "rules.toml"
    rules.write_text(CLOUD_RULES, encoding="utf-8")
    code, out, err = wxpush("rules", "test", str(rules), "订单 123456", *flag)
    assert code == 2 and out == "" and err.count("\n") == 1 and "expected NAME=" in err


ORDERS = """from webhook import Router, TEXT, TextReply, regex

router = Router(name="orders")


@router.message(TEXT & regex(r"^订单\\s*(?P<order>\\d{6,})$"))
def order_status(message, ctx):
    return TextReply("from the bot")
"""


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """A project as the README has it: wxpush.toml, the rules and ordersbot.py side by side,
    nothing on PYTHONPATH; the import is undone afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "ordersbot.py").write_text(ORDERS, encoding="utf-8")
    shutil.copytree(Path(EXAMPLE).resolve().parent, tmp_path, dirs_exist_ok=True)  # its images
    (tmp_path / "rules.toml").write_text(Path(EXAMPLE).read_text(encoding="utf-8"),
                                         encoding="utf-8")
    (tmp_path / "wxpush.toml").write_text(
        '[server]\nrules = "rules.toml"\nrouters = ["ordersbot:router"]\n\n[[apps]]\n'
        'appid = "wxshop"\ntoken = "t"\nmode = "plaintext"\n', encoding="utf-8")
    yield tmp_path
    sys.modules.pop("ordersbot", None)


@pytest.mark.parametrize("how", ["--config", "cwd"])
def test_test_asks_the_configured_routers_first_as_the_server_does(wxpush, shop, monkeypatch,
                                                                   how):
    """The rules file alone answers "order"; the server asks the bot's router first."""
    given = ["--config", str(shop / "wxpush.toml")] if how == "--config" else []
    monkeypatch.chdir(shop if how == "cwd" else shop.parent)
    code, out, _ = wxpush("rules", "test", str(shop / "rules.toml"), "订单 1234567", *given)
    assert code == 0
    assert "matched   orders.order_status" in out and '"content": "from the bot"' in out
    assert "routers   ordersbot:router (from " in out and "appid=wxshop" in out
    code, out, _ = wxpush("rules", "check", str(shop / "rules.toml"), *given)
    assert code == 0 and "ok, 11 rules: orders.order_status, hours, order" in out


def test_a_file_with_no_config_here_is_the_file_alone(wxpush, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = wxpush("rules", "test", EXAMPLE, "订单 1234567")
    assert code == 0 and "matched   order\n" in out
    assert "routers   none (no wxpush.toml here)" in out
