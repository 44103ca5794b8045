"""Rule actions: a rule's cloud function or query, its {result...} templates, and reply.on_error
for every way the call can fail, with a log line naming the rule; line-precise load errors."""

from __future__ import annotations

import logging
import shutil
import textwrap
from pathlib import Path

import pytest

from handlers import build_router
from handlers.builtins import FALLBACK_TEXT
from webhook import TEXT, Router, TextReply
from webhook.errors import ConfigError, FunctionFailed, FunctionTimedOut
from webhook.testing import FakeWeChat
from webhook.testing.factories import OPENID, dispatch, make_text

ISSUE_RULES = """
[[rule]]
name = "order-status"
regex = '^订单\\s*(?P<order>\\d{6,})$'
function = { name = "orderStatus", data = { order = "{order}", openid = "{openid}" } }
reply.text = "订单 {order}：{result.status}，预计 {result.eta} 送达。"
reply.on_error = "暂时查不到订单 {order}，请稍后再试。"

[[rule]]
name = "faq-from-db"
keywords = ["运费"]
query = { collection = "faq", where = { key = "shipping" }, limit = 1 }
reply.text = "{result[0].answer}"
"""
FAQ = {"faq": [{"key": "shipping", "answer": "满 99 元包邮。"}, {"key": "returns", "answer": "7 天"}]}


def load(tmp_path: Path, text: str = ISSUE_RULES) -> Router:
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return build_router(str(path))


def status(data):
    return {"status": "已发货", "eta": "明天", "order": data["order"]}


def test_the_issues_rules_answer_from_the_cloud(tmp_path):
    router = load(tmp_path)
    fake = FakeWeChat(functions={"orderStatus": status}, collections=FAQ)
    route, replies = dispatch(router, make_text("订单 123456"), wechat=fake)
    assert route.names == ("order-status",)
    assert replies == [TextReply("订单 123456：已发货，预计 明天 送达。")]
    assert fake.function_calls == [("orderStatus", {"order": "123456", "openid": OPENID})]
    assert dispatch(router, make_text("运费多少？"), wechat=fake)[1] == [TextReply("满 99 元包邮。")]
    assert fake.statements == ['db.collection("faq").where({"key":"shipping"}).limit(1).get()']


@pytest.mark.parametrize("answer", [
    FunctionFailed(-504002, "functions execute fail: no order"),
    FunctionTimedOut(-504003, "Invoking task timed out after 5 seconds"),
    {"status": "已发货"},                 # no eta
    {"status": "已发货", "eta": None},    # null is no value
    ["not", "an", "object"],
])
def test_a_failed_call_or_a_missing_field_answers_on_error(tmp_path, caplog, answer):
    router = load(tmp_path)
    fake = FakeWeChat(functions={"orderStatus": answer})
    with caplog.at_level(logging.WARNING):
        replies = dispatch(router, make_text("订单 975319"), wechat=fake)[1]
    assert replies == [TextReply("暂时查不到订单 975319，请稍后再试。")]
    (line,) = [r.getMessage() for r in caplog.records if "rule action failed" in r.getMessage()]
    assert "rule=order-status" in line
    assert "no order" not in line and "975319" not in line   # the customer's text: DEBUG only


def test_an_unknown_function_a_missing_collection_and_no_match(tmp_path, caplog):
    router = load(tmp_path)
    assert dispatch(router, make_text("订单 123456"), wechat=FakeWeChat())[1] == \
        [TextReply("暂时查不到订单 123456，请稍后再试。")]
    with caplog.at_level(logging.WARNING):
        assert dispatch(router, make_text("运费"), wechat=FakeWeChat())[1] == []
        nothing = FakeWeChat(collections={"faq": [{"key": "returns", "answer": "7 天"}]})
        assert dispatch(router, make_text("运费"), wechat=nothing)[1] == []
    lines = [r.getMessage() for r in caplog.records if "rule=faq-from-db" in r.getMessage()]
    assert len(lines) == 2 and all("rule action failed" in line and "no reply" in line
                                   for line in lines)
    assert "matched nothing" in lines[1]


def test_customer_text_stays_a_value_in_the_event_and_the_statement(tmp_path):
    router = load(tmp_path, """
        [[rule]]
        name = "echo"
        regex = '^问(?P<q>.+)$'
        function = { name = "ask", data = { q = "{q}", nested = ["{q}", 1, true] } }
        reply.text = "{result}"

        [[rule]]
        name = "lookup"
        regex = '^查(?P<key>.+)$'
        query = { collection = "faq", where = { key = "{key}" }, order_by = ["n", "desc"], skip = 0, limit = 2 }
        reply.text = "{result[0].answer} {result}"
        """)
    hostile = '"}).remove();db.collection("faq'
    fake = FakeWeChat(functions={"ask": lambda data: data}, collections=FAQ)
    assert dispatch(router, make_text("问" + hostile), wechat=fake)[1] == \
        [TextReply('{"q":"\\"}).remove();db.collection(\\"faq","nested":["\\"}).remove();'
                   'db.collection(\\"faq",1,true]}')]
    assert dispatch(router, make_text("查" + hostile), wechat=fake)[1] == []
    assert fake.statements == ['db.collection("faq").where({"key":"\\"}).remove();'
                               'db.collection(\\"faq"}).orderBy("n","desc").skip(0).limit(2).get()']
    assert len(fake.env.collections["faq"]) == 2


def test_a_function_rule_needs_no_reply(tmp_path):
    router = load(tmp_path, """
        [[rule]]
        name = "note"
        keywords = ["反馈"]
        function = { name = "feedback", data = { text = "hi" } }
        """)
    fake = FakeWeChat(functions={"feedback": None})
    assert dispatch(router, make_text("我要反馈"), wechat=fake)[1] == []
    assert fake.function_calls == [("feedback", {"text": "hi"})]


def test_python_handlers_use_the_stand_in():
    router = Router()

    @router.message(TEXT)
    def handler(message, ctx):
        ctx.wechat.typing()
        ctx.wechat.send(TextReply("稍等"))
        ctx.wechat.send(TextReply("有人找"), openid="o-staff")
        return TextReply(str(ctx.wechat.download_media("m1")))

    fake = FakeWeChat(media={"m1": b"jpg"})
    assert dispatch(router, make_text("hi"), wechat=fake)[1] == [TextReply("b'jpg'")]
    assert fake.sent == [(OPENID, TextReply("稍等")), ("o-staff", TextReply("有人找"))]
    assert (fake.typing_calls, fake.downloads) == ([True], ["m1"])


def test_without_a_stand_in_a_cloud_rule_fails_as_a_handler_does(tmp_path, caplog):
    """... and the customer gets what a failed handler's customer gets: the fallback."""
    with caplog.at_level(logging.ERROR):
        replies = dispatch(load(tmp_path), make_text("订单 123456"))[1]
    assert [reply.content for reply in replies] == [FALLBACK_TEXT]
    assert "handler failed rule=order-status" in caplog.text


BASE = """
[[rule]]
name = "r"
regex = '^订单(?P<order>\\d+)$'
{body}
"""


@pytest.mark.parametrize("body, line, problem", [
    ('reply.text = "a"\nreply.on_error = "b"', 6, "neither"),
    ('function = { name = "f" }\nquery = { collection = "c" }\nreply.text = "a"', 6,
     "function or query, not both"),
    ('function = { name = "f", env = "x" }\nreply.text = "a"', 5, "env: unknown key"),
    ('function = { data = {} }\nreply.text = "a"', 5, "name is required"),
    ('function = { name = "f", data = { a = "{nope}" } }\nreply.text = "a"', 5,
     "{nope} is not available"),
    ('function = { name = "f", data = { a = "{result}" } }\nreply.text = "a"', 5,
     "{result} is not available"),
    ('function = { name = "f" }\nreply.text = "{result.__class__}"', 6, "not available"),
    ('function = { name = "f" }\nreply.text = "a"\nreply.on_error = "{result.x}"', 7,
     "{result.x} is not available"),
    ('reply.text = "{result.x}"', 5, "{result.x} is not available"),
    ('query = { collection = "c", limit = 0 }\nreply.text = "a"', 5, "limit()"),
    ('query = { collection = "c", order_by = ["a", "up"] }\nreply.text = "a"', 5, "asc"),
    ('query = { where = { a = 1 } }\nreply.text = "a"', 5, "collection is required"),
    ('query = { collection = "c" }', 2, "missing reply"),
    ('function = { name = "f", data = { when = 1979-05-27 } }', 5, "cannot be sent"),
    ('function = { name = "f" }\nreplies = [{text = "a", on_error = "b"}]', 6,
     "on_error goes in reply"),
])
def test_load_errors_name_the_line(tmp_path, body, line, problem):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, BASE.format(body=body))
    assert caught.value.line == line, str(caught.value)
    assert problem in str(caught.value)


def test_the_example_files_cloud_rules_answer_once_turned_on(tmp_path):
    examples = Path(__file__).parents[2] / "webhook" / "examples"
    shutil.copytree(examples, tmp_path, dirs_exist_ok=True)     # the images its replies send
    example = (examples / "rules.example.toml").read_text(encoding="utf-8")
    assert example.count("enabled = false\n") == 2
    router = load(tmp_path, example.replace("enabled = false\n", ""))
    fake = FakeWeChat(functions={"orderStatus": status}, collections=FAQ)
    assert dispatch(router, make_text("查订单 123456"), wechat=fake)[1] == \
        [TextReply("订单 123456：已发货，预计 明天 送达。")]
    assert dispatch(router, make_text("运费"), wechat=fake)[1] == [TextReply("满 99 元包邮。")]
