"""webhook.cloudquery: statements with every value a JSON literal, read back by ``parse``; no
text a value holds can change what the statement does."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from webhook.cloudquery import (Command, Query, collection, gt, in_, lte, neq, nin, parse)

JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
HOSTILE = ['"}).remove();db.collection("users', "\\", '\\"', "\u2028\u2029", "</script>",
           "db.command.gt(", "'),db.x('", "\x00\n\r", "订单 123456", "\ud800"]

scalars = (st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(HOSTILE))
names = st.text(min_size=1, max_size=10) | st.sampled_from(HOSTILE[:-3])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(names, inner, max_size=3), max_leaves=8)
commands = st.builds(Command, st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]), scalars) \
    | st.builds(Command, st.sampled_from(["in", "nin"]), st.lists(scalars, max_size=3))
conditions = st.dictionaries(names, values | commands, max_size=4)


@st.composite
def statements(draw: Any) -> tuple[Query, str, Any]:
    query = collection(draw(names))
    verb = draw(st.sampled_from(["get", "count", "update", "remove", "add", "doc"]))
    if verb == "add":
        data = draw(st.dictionaries(names, values, max_size=3)
                    | st.lists(st.dictionaries(names, values, max_size=2), min_size=1, max_size=3))
        return query, "add", data
    if verb == "doc":
        query = query.doc(draw(names))
        verb = draw(st.sampled_from(["get", "update", "remove"]))
    else:
        query = query.where(draw(conditions))
        if verb == "get":
            for name, direction in draw(st.lists(st.tuples(names, st.sampled_from(["asc", "desc"])),
                                                 max_size=2)):
                query = query.order_by(name, direction)
            if draw(st.booleans()):
                query = query.skip(draw(st.integers(0, 10**6)))
            if draw(st.booleans()):
                query = query.limit(draw(st.integers(1, 1000)))
    data = draw(st.dictionaries(names, values, min_size=1, max_size=3)) if verb == "update" \
        else None
    return query, verb, data


def run(query: Query, verb: str, data: Any):
    if verb in ("add", "update"):
        return getattr(query, verb)(data)
    return getattr(query, verb)()


def skeleton(text: str) -> str:
    """The statement with every string literal and number blanked: what it does, not what
    it holds."""
    return NUMBER.sub("0", JSON_STRING.sub('""', text))


def blank(value: Any, keys: list[int]) -> Any:
    """``value`` with the same shape and every string and number replaced by a stand-in."""
    if isinstance(value, Command):
        return Command(value.op, blank(value.value, keys))
    if isinstance(value, dict):
        out = {}
        for item in value.values():
            keys[0] += 1
            out[f"k{keys[0]}"] = blank(item, keys)
        return out
    if isinstance(value, list):
        return [blank(item, keys) for item in value]
    if isinstance(value, str):
        return "x"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 0
    return value


def blanked(query: Query, data: Any) -> tuple[Query, Any]:
    counter = [0]
    stand_in = Query("c", None if query.doc_id is None else "d",
                     None if query.conditions is None else blank(query.conditions, counter),
                     tuple(("f", direction) for _, direction in query.ordering),
                     None if query.offset is None else 0, None if query.size is None else 1)
    return stand_in, blank(data, counter)


@settings(max_examples=400, deadline=None)
@given(statements())
def test_every_statement_reads_back_as_it_was_built(built):
    query, verb, data = built
    statement = run(query, verb, data)
    assert statement.text.isascii()
    operation = parse(statement.text)
    assert (operation.verb, operation.action) == (verb, statement.action)
    assert operation.data == data
    if verb != "add":
        assert operation.query == query


@settings(max_examples=400, deadline=None)
@given(statements())
def test_no_value_leaves_its_literal(built):
    """Whatever the values hold, the statement outside its literals is the one the same
    shape with harmless values gives."""
    query, verb, data = built
    stand_in, stand_in_data = blanked(query, data)
    assert skeleton(run(query, verb, data).text) == \
        skeleton(run(stand_in, verb, stand_in_data).text)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_stays_a_value(text):
    statement = collection("faq").where({"key": text, text or "k": neq(text)}).limit(1).get()
    assert skeleton(statement.text) == 'db.collection("").where({"":"","":db.command.neq("")})' \
                                       '.limit(0).get()'
    assert parse(statement.text).query.conditions == {"key": text, text: Command("neq", text)}


def test_the_texts_written():
    assert collection("faq").where({"key": "shipping"}).limit(1).get().text == \
        'db.collection("faq").where({"key":"shipping"}).limit(1).get()'
    assert collection("geo").where({"done": True, "n": gt(2), "tag": in_(["a"])}).count().text == \
        'db.collection("geo").where({"done":true,"n":db.command.gt(2),' \
        '"tag":db.command.in(["a"])}).count()'
    assert collection("o").doc("id-1").update({"state": "运费"}).text == \
        'db.collection("o").doc("id-1").update({data:{"state":"\\u8fd0\\u8d39"}})'
    assert collection("o").where({"n": lte(0)}).remove().action == "databasedelete"
    assert collection("o").add([{"a": 1}]).action == "databaseadd"
    assert collection("o").where({"a": nin([1])}).order_by("t", "desc").skip(5).get().text == \
        'db.collection("o").where({"a":db.command.nin([1])}).orderBy("t","desc").skip(5).get()'


@pytest.mark.parametrize("build, problem", [
    (lambda: collection(""), "collection name"),
    (lambda: collection("c").limit(0), "limit"),
    (lambda: collection("c").limit(True), "limit"),
    (lambda: collection("c").skip(-1), "skip"),
    (lambda: collection("c").order_by("a", "up"), "asc"),
    (lambda: collection("c").where({"a": float("nan")}), "JSON number"),
    (lambda: collection("c").where({"a": 2**60}), "JavaScript number"),
    (lambda: collection("c").where({"a": object()}), "not a JSON value"),
    (lambda: collection("c").where({1: "a"}), "field names"),
    (lambda: collection("c").where({"a": {"b": {}}}).update({"a": gt(1)}), "where()"),
    (lambda: collection("c").update({"a": 1}), "doc() or where()"),
    (lambda: collection("c").where({}).limit(3).remove(), "no order_by"),
    (lambda: collection("c").limit(3).count(), "only where"),
    (lambda: collection("c").doc("x").where({}), "cannot follow doc"),
    (lambda: collection("c").where({}).add({"a": 1}), "directly"),
    (lambda: collection("c").add([]), "non-empty list"),
    (lambda: Command("regex", "a"), "unknown command"),
])
def test_what_the_builder_refuses(build, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        build()


@pytest.mark.parametrize("text, column", [
    ('db.collection("a").get();db.collection("b").remove()', 25),
    ('db.collection("a").where({done:true}).get()', 27),
    ('db.collection("a").where({"a":1}) .get()', 34),
    ('db.collection("a").where({"a":db.command.regex("x")}).get()', 31),
    ('db.collection("a").where({"a":NaN}).get()', 31),
    ('db.collection("a").where({"a":1,"a":2}).get()', 36),
    ('db.collection("a").add({data:{"a":db.command.gt(1)}})', 35),
    ('db.collection("a").where({"a":1}).limit(5000).get()', 41),
    ("db.collection('a').get()", 15),
    ('db.collection("a")', 19),
    ('db.collections("a").get()', 1),
])
def test_parse_refuses_anything_else_naming_the_column(text, column):
    with pytest.raises(ValueError) as refused:
        parse(text)
    assert str(refused.value).startswith(f"column {column}:"), str(refused.value)


def test_a_built_value_is_a_copy():
    conditions = {"a": [1]}
    query = collection("c").where(conditions)
    conditions["a"].append(2)
    assert json.loads(query.get().text.split("where(")[1].split(")")[0]) == {"a": [1]}
