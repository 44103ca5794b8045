"""A bot's own router, named in wxpush.toml's ``[server] routers``: a module beside the config
imports without PYTHONPATH, and one that does not import is a line naming the config's
``routers`` line and what went wrong."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers import build_router
from webhook.errors import ConfigError
from webhook.testing.factories import dispatch, make_text

BOT = '''from webhook import Router, TEXT, TextReply, regex

router = Router(name="orders")


@router.message(TEXT & regex(r"^订单\\s*(?P<order>\\d{6,})$"))
def order_status(message, ctx):
    return TextReply(f"订单 {ctx.match['order']} 由 bot 查询。")
'''


@pytest.fixture
def project(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty directory for a wxpush.toml and the bot's modules; what importing them adds
    to sys.path and sys.modules is taken away afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("shopbot", "brokenbot", "needsbot", "lostbot")):
            del sys.modules[name]


def config(project: Path, routers: str) -> str:
    path = project / "wxpush.toml"
    path.write_text(f'# the shop\n[server]\nstore = "sqlite:///w.db"\nrouters = {routers}\n',
                    encoding="utf-8")
    return str(path)


def test_a_module_beside_the_config_imports(project):
    (project / "shopbot.py").write_text(BOT, encoding="utf-8")
    assert str(project) not in sys.path
    router = build_router(None, ["shopbot:router"], config=config(project, '["shopbot:router"]'))
    route, replies = dispatch(router, make_text("订单 123456"))
    assert route.names == ("orders.order_status",)
    assert replies[0].content == "订单 123456 由 bot 查询。"
    assert sys.path[-1] == str(project)        # after the installed packages


def test_without_the_config_it_is_not_found(project):
    (project / "lostbot.py").write_text(BOT, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        build_router(None, ["lostbot:router"])
    assert str(caught.value) == ("routers: cannot import router 'lostbot:router': no module "
                                 "named 'lostbot' installed")


def test_a_missing_module_names_the_config_line_and_where_it_looked(project):
    path = config(project, '["nosuchbot:router"]')
    with pytest.raises(ConfigError) as caught:
        build_router(None, ["nosuchbot:router"], config=path)
    assert str(caught.value) == (f"{path}:4: routers: cannot import router 'nosuchbot:router': "
                                 f"no module named 'nosuchbot' beside wxpush.toml ({project}) "
                                 "or installed")


@pytest.mark.parametrize("source, problem", [
    ("def broken(:\n", "brokenbot.py:1: SyntaxError: "),
    ("import os\nraise RuntimeError('no database\\nat all')\n",
     "brokenbot.py:2: RuntimeError: no database at all"),
    ("router = 'not a router'\n", "brokenbot.router is not a webhook.Router"),
    ("x = 1\n", "brokenbot has no attribute 'router'"),
])
def test_a_module_that_does_not_give_a_router_is_one_line(project, source, problem):
    (project / "brokenbot.py").write_text(source, encoding="utf-8")
    path = config(project, '["brokenbot"]')
    with pytest.raises(ConfigError) as caught:
        build_router(None, ["brokenbot"], config=path)
    message = str(caught.value)
    assert message.startswith(f"{path}:4: routers: cannot import router 'brokenbot': ")
    assert problem in message and "\n" not in message


def test_a_module_missing_what_it_imports_says_where(project):
    (project / "needsbot.py").write_text("import os\nimport no_such_dependency\n",
                                         encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        build_router(None, ["needsbot:router"], config=config(project, '["needsbot:router"]'))
    assert ("needsbot.py:2: ModuleNotFoundError: No module named 'no_such_dependency'"
            in str(caught.value))


def test_a_module_hidden_by_an_installed_one_of_its_name_is_named(project):
    """wxpush's own package is called handlers: a bot's handlers.py beside the config is
    hidden by it."""
    (project / "handlers.py").write_text(BOT, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        build_router(None, ["handlers:router"], config=config(project, '["handlers:router"]'))
    assert f"hides your {project / 'handlers.py'}: rename yours" in str(caught.value)
