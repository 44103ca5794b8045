"""Built-ins: welcome (aware of SessionFrom), hand-off, fallback; configured by [builtins.*]."""

from __future__ import annotations

import textwrap

from handlers import build_router
from handlers.builtins import FALLBACK_TEXT, WELCOME_TEXT
from webhook.push.messages import TextReply
from webhook.testing.factories import (OPENID, dispatch, make_enter_session, make_event, make_image,
                                       make_text, make_unknown)


def load(tmp_path, text=""):
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return build_router(str(path))


def test_defaults(tmp_path):
    router = load(tmp_path)
    assert [rule.name for rule in router.rules] == ["builtin.welcome", "builtin.handoff",
                                                   "builtin.fallback"]
    assert dispatch(router, make_enter_session())[1] == [TextReply(WELCOME_TEXT)]
    for text in ("人工", "我要转人工", "HUMAN please"):
        route, replies = dispatch(router, make_text(text))
        assert route.transfer and route.names == ("builtin.handoff",) and replies == []
    assert dispatch(router, make_text("随便问问"))[1] == [TextReply(FALLBACK_TEXT)]


def test_fallback_is_text_only_and_never_answers_other_events(tmp_path):
    router = load(tmp_path)
    for message in (make_image(), make_event("debug_demo"), make_unknown("voice")):
        assert not router.route(message, appid="wx1")


def test_configured(tmp_path):
    router = load(tmp_path, """
        [builtins.welcome]
        text = "欢迎 {session_from}"
        session_from = {order = "请发送订单号 {openid}"}

        [builtins.handoff]
        exact = ["客服"]
        text = "正在转接"

        [builtins.fallback]
        text = "没听懂"
        msgtypes = ["text", "image"]
    """)
    assert dispatch(router, make_enter_session("goods"))[1] == [TextReply("欢迎 goods")]
    assert dispatch(router, make_enter_session("order"))[1] == [TextReply(f"请发送订单号 {OPENID}")]
    route, replies = dispatch(router, make_text("客服"))
    assert route.transfer and replies == [TextReply("正在转接")]
    assert not dispatch(router, make_text("人工"))[0].transfer  # exact replaces the defaults
    assert dispatch(router, make_image())[1] == [TextReply("没听懂")]


def test_turned_off_and_rules_come_first(tmp_path):
    router = load(tmp_path, """
        [[rule]]
        name = "greet"
        session_from = ["vip"]
        reply.text = "尊敬的会员您好"

        [builtins.handoff]
        enabled = false

        [builtins.fallback]
        enabled = false
    """)
    assert [rule.name for rule in router.rules] == ["greet", "builtin.welcome"]
    assert dispatch(router, make_enter_session("vip"))[1] == [TextReply("尊敬的会员您好")]
    assert not router.route(make_text("人工"), appid="wx1")
