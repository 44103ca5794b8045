"""Matchers, Router priority and Route.run; the keyword index against a plain loop over rules."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given, settings, strategies as st

from webhook.push.messages import TextReply, TransferToHuman
from webhook.routing.matchers import (ANY, ENTER_SESSION, EVENT, IMAGE, MESSAGE, TEXT, Env, app,
                                      event, exact, keyword, msgtype, prefix, regex, session_from)
from webhook.routing.router import Router
from webhook.testing.factories import (APPID, dispatch, make_enter_session, make_event, make_image,
                                       make_miniprogrampage, make_text, make_unknown)


def hit(matcher, message, appid=APPID):
    return matcher(message, Env(appid, message)) is not None


# --- matchers ------------------------------------------------------------------------------

def test_type_matchers():
    text, image, card = make_text(), make_image(), make_miniprogrampage()
    enter, demo, voice = make_enter_session(), make_event("debug_demo"), make_unknown("voice")
    assert [hit(TEXT, m) for m in (text, image, enter)] == [True, False, False]
    assert hit(IMAGE, image) and hit(msgtype("miniprogrampage"), card)
    assert hit(ENTER_SESSION, enter) and not hit(ENTER_SESSION, demo)
    assert hit(EVENT, demo) and hit(event("debug_demo"), demo) and not hit(EVENT, text)
    assert [hit(MESSAGE, m) for m in (text, image, card, enter, voice)] == [True] * 3 + [False] * 2
    assert hit(msgtype("voice"), voice) and hit(ANY, voice)


@pytest.mark.parametrize("content", ["营业时间", "请问营业时间？", "ＶＩＰ会员", "vip", "Vip!"])
def test_keyword_contains_folds_width_and_case(content):
    assert hit(keyword("营业时间", "VIP"), make_text(content))


def test_keyword_exact_and_prefix():
    assert hit(exact("人工"), make_text("  人工 "))
    assert not hit(exact("人工"), make_text("人工客服"))
    assert hit(prefix("订单"), make_text("订单123"))
    assert not hit(prefix("订单"), make_text("我的订单"))
    assert hit(exact("ａｂｃ"), make_text("ABC"))
    assert not hit(keyword("x"), make_image())


def test_keyword_needs_words():
    with pytest.raises(ValueError):
        keyword()
    with pytest.raises(ValueError):
        exact("  ")


def test_regex_groups_on_normalised_text():
    message = make_text("订单 １２３４５６７")
    result = regex(r"^订单\s*(?P<order>\d{6,})$")(message)
    assert result.groups == {"order": "1234567"}
    assert result.re_match.group(1) == "1234567"
    assert regex(r"x")(make_image()) is None


def test_session_from_and_app():
    assert hit(session_from("goods"), make_enter_session("goods"))
    assert not hit(session_from("goods"), make_enter_session("order"))
    assert not hit(session_from("goods"), make_text("goods"))
    assert hit(app("wxA"), make_text(), appid="wxA") and not hit(app("wxA"), make_text(), "wxB")


def test_composition_and_callables():
    vip = keyword("vip")
    assert hit(TEXT & vip & ~app("wxB"), make_text("vip"))
    assert not hit(vip & ~app("wxB"), make_text("vip"), appid="wxB")
    assert hit(vip | IMAGE, make_image())
    long_text = (lambda m: len(m.content) > 3) & TEXT
    assert hit(long_text, make_text("abcd")) and not hit(long_text, make_text("ab"))
    merged = (regex(r"(?P<a>\d)") & regex(r"(?P<b>[a-z])"))(make_text("1x"))
    assert merged.groups == {"a": "1", "b": "x"}


# --- router --------------------------------------------------------------------------------

def build():
    router = Router(name="t")

    @router.text(keyword("营业时间"))
    def hours(message, ctx):
        return TextReply("9-18")

    @router.text(regex(r"^订单\s*(?P<order>\d{6,})$"))
    def order(message, ctx):
        return TextReply(f"订单 {ctx.match['order']} {ctx.appid} {ctx.rule}")

    router.add(exact("人工"), transfer=True, name="handoff")

    @router.enter_session()
    def welcome(message, ctx):
        return [TextReply("hi"), TextReply(message.session_from)]

    @router.fallback(TEXT)
    def fallback(message, ctx):
        return TextReply("?")

    return router


def test_route_and_run():
    router = build()
    route, replies = dispatch(router, make_text("订单 123456"))
    assert route.names == ("t.order",) and not route.transfer
    assert replies == [TextReply(f"订单 123456 {APPID} t.order")]
    route, replies = dispatch(router, make_text("人工"))
    assert route.transfer and route.names == ("handoff",) and replies == []
    assert dispatch(router, make_enter_session("goods"))[1] == [TextReply("hi"), TextReply("goods")]
    assert dispatch(router, make_text("什么"))[1] == [TextReply("?")]


def test_no_match_acknowledges_only():
    router = build()
    for message in (make_event("debug_demo"), make_unknown("voice"), make_image()):
        route = router.route(message, appid=APPID)
        assert not route and route.names == () and not route.transfer


def test_unknown_types_reach_rules_that_ask():
    router = Router()
    router.message()(lambda m, c: TextReply("message"))
    router.message(msgtype("voice"), name="voice")(lambda m, c: TextReply("voice"))
    assert dispatch(router, make_unknown("voice"))[0].names == ("voice",)
    assert dispatch(router, make_image())[1] == [TextReply("message")]


def test_first_match_wins_unless_continue_and_fallback_needs_no_match():
    router = Router()
    router.text(keyword("a"), name="log", continue_=True)(lambda m, c: None)
    router.text(keyword("ab"), name="ab")(lambda m, c: TextReply("ab"))
    router.text(keyword("b"), name="b")(lambda m, c: TextReply("b"))
    router.fallback(TEXT, name="fb")(lambda m, c: TextReply("fb"))
    assert router.route(make_text("ab"), appid=APPID).names == ("log", "ab")
    assert router.route(make_text("b"), appid=APPID).names == ("b",)
    assert router.route(make_text("a"), appid=APPID).names == ("log",)
    assert router.route(make_text("z"), appid=APPID).names == ("fb",)


def test_include_keeps_place_in_order():
    inner = Router(name="inner")
    inner.text(keyword("x"))(lambda m, c: TextReply("inner"))
    outer = Router()
    outer.text(keyword("xy"), name="first")(lambda m, c: TextReply("first"))
    outer.include(inner)
    outer.text(keyword("x"), name="last")(lambda m, c: TextReply("last"))
    assert [rule.name for rule in outer.rules] == ["first", "inner.<lambda>", "last"]
    assert outer.route(make_text("x"), appid=APPID).names == ("inner.<lambda>",)
    assert outer.route(make_text("xy"), appid=APPID).names == ("first",)


def test_router_is_frozen_once_routing():
    router = build()
    router.route(make_text(), appid=APPID)
    with pytest.raises(RuntimeError):
        router.add(TEXT, lambda m, c: None)


def test_transfer_is_never_an_answer_to_an_event():
    router = Router()
    router.add(ANY, transfer=True, name="all")
    assert router.route(make_text(), appid=APPID).transfer
    assert not router.route(make_enter_session(), appid=APPID).transfer


def test_failing_handler_is_logged_and_skipped(caplog):
    router = Router()
    router.text(name="boom", continue_=True)(lambda m, c: 1 / 0)
    router.text(name="ok")(lambda m, c: TextReply("ok"))
    with caplog.at_level(logging.INFO):
        route, replies = dispatch(router, make_text("secret content"))
    assert replies == [TextReply("ok")]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "rule=boom" in errors[0] and "ZeroDivisionError" in errors[0]
    assert not any("secret content" in r.getMessage() for r in caplog.records
                   if r.levelno > logging.DEBUG)


def test_a_failing_handler_logs_its_traceback_at_error_without_the_message(caplog):
    router = Router()

    @router.text(name="orders")
    def orders(message, ctx):
        raise KeyError(message.content)

    with caplog.at_level(logging.INFO):
        dispatch(router, make_text("my order 987654"))
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith("handler failed rule=orders appid=")
    assert "Traceback (most recent call last):" in error
    assert "raise KeyError(message.content)" in error and error.endswith("KeyError")
    assert "987654" not in caplog.text            # the error's text may quote the message


def test_the_error_s_text_is_logged_when_revealed(caplog):
    router = Router()
    router.text(name="orders")(lambda m, c: {}[m.content])
    with caplog.at_level(logging.INFO):
        router.route(make_text("order 42"), appid=APPID).run(make_text("order 42"),
                                                             appid=APPID, reveal=True)
    assert "KeyError: 'order 42'" in caplog.text


def test_a_failing_handler_s_customer_gets_its_on_error_reply_or_the_fallback():
    router = Router()
    router.text(regex("^order"), name="orders", on_error=TextReply("查询失败，请稍后再试"))(
        lambda m, c: 1 / 0)
    router.text(regex("^stock"), name="stock")(lambda m, c: 1 / 0)
    router.fallback(TEXT, name="fallback")(lambda m, c: TextReply("没听懂"))
    for text, expected in (("order 1", "查询失败，请稍后再试"), ("stock 1", "没听懂")):
        message = make_text(text)
        route = router.route(message, appid=APPID)
        replies = route.run(message, appid=APPID,
                            rescue=lambda: router.rescue(message, appid=APPID))
        assert replies == [TextReply(expected)]
    # No fallback matches an image: nothing to say, as before.
    assert router.rescue(make_image(), appid=APPID).steps == ()


def test_run_tells_how_long_each_handler_took_and_which_failed():
    router = Router()
    router.text(name="a", continue_=True)(lambda m, c: None)
    router.text(name="b")(lambda m, c: 1 / 0)
    seen = []
    router.route(make_text(), appid=APPID).run(
        make_text(), appid=APPID, observe=lambda rule, s, error: seen.append(
            (rule, s >= 0, type(error).__name__ if error else None)))
    assert seen == [("a", True, None), ("b", True, "ZeroDivisionError")]


def test_bad_returns_and_run_time_transfer_are_dropped(caplog):
    router = Router()
    router.text()(lambda m, c: [TransferToHuman(), "text", TextReply("kept")])
    with caplog.at_level(logging.WARNING):
        assert dispatch(router, make_text())[1] == [TextReply("kept")]
    assert "TransferToHuman" in caplog.text and "non-reply" in caplog.text


def test_slow_handler_is_logged(caplog):
    router = Router()
    router.text(name="slow")(lambda m, c: None)
    with caplog.at_level(logging.WARNING):
        dispatch(router, make_text(), budget=-1)
    assert "over budget rule=slow" in caplog.text


def test_context_carries_clock_and_logger():
    seen = {}
    router = Router()

    @router.text()
    def record(message, ctx):
        seen.update(now=ctx.clock(), logger=ctx.logger, match=dict(ctx.match))

    dispatch(router, make_text(), clock=lambda: 42.0)
    assert seen["now"] == 42.0 and seen["match"] == {} and seen["logger"] is not None


# --- the index never changes a decision ----------------------------------------------------

ALPHABET = "ab人工Ａ"
words = st.text(alphabet=ALPHABET, min_size=1, max_size=3)
KINDS = ["contains", "exact", "prefix", "regex", "image", "or", "and_app", "not"]
specs = st.lists(st.tuples(st.sampled_from(KINDS), words, st.booleans()), min_size=1, max_size=12)


def spec_matcher(kind, word):
    return {"contains": lambda: keyword(word), "exact": lambda: exact(word),
            "prefix": lambda: prefix(word), "regex": lambda: regex(re.escape(word)),
            "image": lambda: IMAGE, "or": lambda: keyword(word) | exact(word + "b"),
            "and_app": lambda: app(APPID) & keyword(word), "not": lambda: ~keyword(word)}[kind]()


@settings(max_examples=200, deadline=None)
@given(specs, st.text(alphabet=ALPHABET + " ", max_size=6), st.booleans())
def test_index_agrees_with_linear_evaluation(rules, content, as_image):
    router = Router()
    for number, (kind, word, cont) in enumerate(rules):
        router.add(spec_matcher(kind, word), lambda m, c: None, name=f"r{number}",
                   continue_=cont)
    message = make_image() if as_image else make_text(content)
    expected, env = [], Env(APPID, message)
    for rule in router.rules:
        if rule.matcher.match(message, env) is not None:
            expected.append(rule.name)
            if not rule.continue_:
                break
    assert router.route(message, appid=APPID).names == tuple(expected)


# --- may_transfer: never False for a push route hands off ------------------------------------

def test_may_transfer_rules_out_what_no_transfer_rule_can_match():
    router = Router()
    router.add(keyword("人工", "Agent") | exact("客服"), transfer=True, name="handoff")
    router.add(TEXT, lambda m, c: None, name="chat")
    assert not router.may_transfer("text", "你好")
    assert router.may_transfer("text", "转ＡＧＥＮＴ")       # folded like the matcher folds
    assert router.may_transfer("text", "我要人工服务")
    assert not router.may_transfer("image", "")
    assert not router.may_transfer("event", "")
    images = Router()
    images.add(IMAGE, transfer=True, name="images")
    assert images.may_transfer("image", "") and not images.may_transfer("text", "人工")
    anything = Router()
    anything.add(lambda message: True, transfer=True, name="predicate")
    assert anything.may_transfer("text", "hi") and not anything.may_transfer("event", "")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KINDS), words, st.booleans(), st.booleans()),
                min_size=1, max_size=8),
       st.text(alphabet=ALPHABET + " ", max_size=6), st.sampled_from(["text", "image", "event"]))
def test_may_transfer_is_true_whenever_route_transfers(rules, content, kind):
    router = Router()
    for number, (matcher_kind, word, cont, transfer) in enumerate(rules):
        router.add(spec_matcher(matcher_kind, word), None if transfer else (lambda m, c: None),
                   name=f"r{number}", continue_=cont, transfer=transfer)
    message = {"text": lambda: make_text(content), "image": make_image,
               "event": make_enter_session}[kind]()
    if router.route(message, appid=APPID).transfer:
        assert router.may_transfer(message.msg_type, content if kind == "text" else "")
