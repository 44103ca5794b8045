"""wellformed.py: valid Unicode, and JSON whose every string is."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from webhook.wellformed import NotText, is_text, json_is_text, loads

CHARS = st.characters() | st.characters(categories=["Cs"])
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(CHARS, max_size=8),
                      lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(CHARS, max_size=4), inner, max_size=4),
                      max_leaves=12)


def utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@given(st.text(CHARS))
def test_is_text_is_whether_utf8_can_carry_it(value: str) -> None:
    assert is_text(value) == utf8(value)


@given(VALUES)
def test_loads_gives_the_value_or_refuses_a_lone_surrogate(value: object) -> None:
    raw = json.dumps(value)   # ASCII: every surrogate is a \u escape
    value = json.loads(raw)   # a high and a low one side by side decode to one character
    if utf8_all(value):
        assert loads(raw) == value and loads(raw.encode()) == value
    else:
        with pytest.raises(NotText):
            loads(raw)


def utf8_all(value: object) -> bool:
    if isinstance(value, str):
        return utf8(value)
    if isinstance(value, dict):
        return all(utf8(k) and utf8_all(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(utf8_all, value))
    return True


@pytest.mark.parametrize("raw", ['"\\ud800"', '{"\\uDC00": 1}', '[1, ["\\udbff"]]',
                                 '{"a": {"b": "x\\ud83d"}}', '"\\ude00\\ud83d"'])
def test_a_lone_surrogate_anywhere_is_refused(raw: str) -> None:
    with pytest.raises(NotText):
        loads(raw)
    assert not json_is_text(raw, json.loads(raw))


@pytest.mark.parametrize("depth", [10, 400, 700])
def test_nesting_as_deep_as_the_decoder_takes_is_walked(depth: int) -> None:
    inner = '"\\ud800"'
    with pytest.raises(NotText):
        loads('{"a":' + "[" * depth + inner + "]" * depth + "}")
    nested: object = "\U0001f600"
    for _ in range(depth):
        nested = [nested]
    assert loads("[" * depth + '"\\ud83d\\ude00"' + "]" * depth) == nested


def test_a_pair_and_an_escaped_backslash_are_text() -> None:
    assert loads('"\\ud83d\\ude00"') == "\U0001f600"
    assert loads('"\\\\ud800"') == "\\ud800"      # a backslash, then "ud800"


@pytest.mark.parametrize("raw", [b"\xff", b'"\xed\xa0\x80"', '"x"'.encode("utf-16")])
def test_bytes_are_utf8_or_refused(raw: bytes) -> None:
    with pytest.raises(NotText):
        loads(raw)


@pytest.mark.parametrize("raw", ["NaN", "[Infinity]", "{", "1 2"])
def test_what_is_not_json_is_a_value_error(raw: str) -> None:
    with pytest.raises(ValueError) as info:
        loads(raw)
    assert not isinstance(info.value, NotText)
