"""The keyword bot: a rules file, read in file order, with line-precise validation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from handlers import build_router
from webhook.errors import ConfigError
from webhook.push.messages import ImageReply, LinkReply, MiniProgramPageReply, TextReply
from webhook.testing.factories import (OPENID, dispatch, make_enter_session, make_event, make_image,
                                       make_text, make_unknown)

ROOT = Path(__file__).parents[2]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def load(tmp_path: Path, text: str):
    return build_router(write(tmp_path, text))


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_no_rules_file_only_acknowledges():
    router = build_router(None)
    for message in (make_text("人工"), make_enter_session(), make_text("hello")):
        assert not router.route(message, appid="wx1")


def test_example_file_loads_and_answers():
    router = build_router(str(ROOT / "rules.example.toml"))
    assert dispatch(router, make_text("几点开门？"))[1] == [TextReply("我们的营业时间是每天 9:00-21:00。")]
    assert dispatch(router, make_text("订单 1234567"))[1] == [TextReply("订单 1234567 正在处理中。")]
    route, replies = dispatch(router, make_text("ＶＩＰ"))
    assert route.names == ("vip",) and isinstance(replies[1], LinkReply)
    examples = ROOT / "webhook" / "examples"       # the images live beside the rules
    assert dispatch(router, make_text("菜单"))[1] == [
        TextReply("这是我们的价目表："), ImageReply(path=str(examples / "menu.png"))]
    (card,) = dispatch(router, make_text("怎么下单？"))[1]
    assert card == MiniProgramPageReply(title="在小程序里下单", pagepath="pages/index/index",
                                        thumb_path=str(examples / "card.png"))
    assert dispatch(router, make_text("我要人工"))[0].transfer


def test_issue_rules_in_file_order(tmp_path):
    router = load(tmp_path, """
        [[rule]]
        name = "hours"
        keywords = ["营业时间", "几点开门"]
        reply.text = "9:00-21:00"

        [[rule]]
        name = "order"
        regex = '^订单\\s*(?P<order>\\d{6,})$'
        reply.text = "订单 {order} 正在处理中。{openid}"

        [[rule]]
        name = "human"
        keywords = ["人工", "转人工"]
        transfer = true

        [[rule]]
        name = "welcome"
        event = "user_enter_tempsession"
        reply.text = "您好 {session_from}"
    """)
    assert dispatch(router, make_text("营业时间几点开门"))[0].names == ("hours",)
    assert dispatch(router, make_text("订单 654321"))[1] == [TextReply(f"订单 654321 正在处理中。{OPENID}")]
    route, replies = dispatch(router, make_text("转人工"))
    assert route.names == ("human",) and route.transfer and replies == []
    assert dispatch(router, make_enter_session("x"))[1] == [TextReply("您好 x")]


def test_reply_kinds_and_several_replies(tmp_path):
    (tmp_path / "menu.png").write_bytes(b"\x89PNG")
    router = load(tmp_path, """
        [[rule]]
        name = "all"
        exact = ["menu"]
        replies = [
          {text = "a"},
          {image = "menu.png"},
          {image = {media_id = "MEDIA"}},
          {link = {title = "t", description = "d", url = "https://e.com/{openid}"}},
          {miniprogrampage = {title = "c", pagepath = "pages/a", thumb_path = "menu.png"}},
        ]
    """)
    replies = dispatch(router, make_text("MENU", openid="o1"))[1]
    assert replies == [TextReply("a"), ImageReply(path=str(tmp_path / "menu.png")),
                       ImageReply(media_id="MEDIA"), LinkReply("t", "d", "https://e.com/o1"),
                       MiniProgramPageReply("c", "pages/a", thumb_path=str(tmp_path / "menu.png"))]


def test_conditions_apps_msgtype_session_from_continue_enabled(tmp_path):
    router = load(tmp_path, """
        [[rule]]
        name = "audit"
        prefix = ["订单"]
        continue = true
        reply.text = "seen"

        [[rule]]
        name = "shop-only"
        prefix = ["订单"]
        apps = ["wxshop"]
        reply.text = "shop"

        [[rule]]
        name = "off"
        keywords = ["订单"]
        enabled = false
        reply.text = "never"

        [[rule]]
        name = "pictures"
        msgtype = ["image"]
        reply.text = "图片已收到"

        [[rule]]
        name = "voice"
        msgtype = "voice"
        reply.text = "暂不支持语音"

        [[rule]]
        name = "goods"
        session_from = ["goods"]
        reply.text = "商品咨询"

        [builtins.fallback]
        enabled = false
    """)
    assert dispatch(router, make_text("订单1"), appid="wxshop")[1] == [TextReply("seen"),
                                                                      TextReply("shop")]
    assert dispatch(router, make_text("订单1"), appid="wxother")[0].names == ("audit",)
    assert dispatch(router, make_image())[1] == [TextReply("图片已收到")]
    assert dispatch(router, make_unknown("voice"))[0].names == ("voice",)
    assert dispatch(router, make_enter_session("goods"))[0].names == ("goods",)
    assert dispatch(router, make_enter_session("other"))[0].names == ("builtin.welcome",)
    assert not dispatch(router, make_event("debug_demo"))[0]


def test_literal_braces_in_text(tmp_path):
    router = load(tmp_path, """
        [[rule]]
        name = "json"
        keywords = ["json"]
        reply.text = "{{\\"a\\": 1}}"
    """)
    assert dispatch(router, make_text("json"))[1] == [TextReply('{"a": 1}')]


@pytest.mark.parametrize(("body", "expected"), [
    ('[[rule]]\nname = "a"\nkeyword = ["x"]\nreply.text = "b"\n', ":3: keyword: unknown key"),
    ('[[rule]]\nname = "a"\nregex = "(x"\nreply.text = "b"\n', ":3: regex: bad regex"),
    ('[[rule]]\nname = "a"\nregex = "(?P<x>\\\\d+)"\nreply.text = "{y}"\n',
     ":4: reply.text: template field {y} is not available"),
    ('[[rule]]\nname = "a"\nkeywords = ["x"]\n', ":1: missing reply"),
    ('[[rule]]\nname = "a"\nkeywords = ["x"]\ntransfer = true\n\n'
     '[[rule]]\nname = "a"\nkeywords = ["y"]\ntransfer = true\n',
     ":7: name: duplicate rule name 'a' (first used at line 2)"),
    ('[[rule]]\nkeywords = ["x"]\ntransfer = true\n', ":1: name is required"),
    ('[[rule]]\nname = "a"\nkeywords = []\ntransfer = true\n', ":3: keywords: must be a non-empty"),
    ('[[rule]]\nname = "a"\nkeywords = ["x"]\nregex = "x"\ntransfer = true\n',
     ":4: regex: give only one of"),
    ('[[rule]]\nname = "a"\nkeywords = ["x"]\nevent = "e"\ntransfer = true\n',
     ":3: keywords: keywords match text messages"),
    ('[[rule]]\nname = "a"\nevent = "user_enter_tempsession"\ntransfer = true\n',
     ":4: transfer: WeChat hands messages, not events"),
    ('[[rule]]\nname = "a"\nkeywords = ["x"]\nreply.image = "nope.png"\n',
     ":4: reply.image: file not found"),
    ('[[rule]]\nname = "a"\nkeywords = ["x"]\nreply.link = {title = "t", url = "ftp://x"}\n',
     ":4: reply.link: url must start with http"),
    ('[[rule]]\nname = "a"\nkeywords = ["x"]\nreply = {sms = "x"}\n', ":4: reply: a reply is a"),
    ('[[rule]]\nname = "a"\nkeywords = ["x"]\ncontinue = "yes"\ntransfer = true\n',
     ":4: continue: must be true or false"),
    ('[rules]\nx = 1\n', ":1: rules: unknown section"),
    ('[[rule]]\nname = "a"\nkeywords = ["x"]\nreply.text = "a"\n\n[builtins.welcome]\ntxt = "x"\n',
     ":7: txt: unknown key"),
    ('[builtins.fallback]\nmsgtypes = ["event"]\n', ":2: msgtypes: the fallback never answers"),
    ('[[rule]]\nname = "a"\nexact = ["x"]\ntransfer = true\n[builtins.greeting]\n',
     ":5: builtins.greeting: unknown built-in"),
    ('[[rule]\nname = "a"\n', ":1: TOML syntax error"),
])
def test_validation_names_line_and_problem(tmp_path, body, expected):
    message = error(tmp_path, body)
    assert message.startswith(str(tmp_path / "rules.toml")) and expected in message, message
