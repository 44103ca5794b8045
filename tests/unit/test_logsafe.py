"""Log lines from outside input: escaped, capped, and repeated ones held back with a count."""

from __future__ import annotations

import logging

from hypothesis import given, strategies as st

from webhook.logsafe import Repeats, shown
from webhook.testing.clock import FakeClock


def test_shown_escapes_what_could_forge_or_garble_a_line():
    assert shown("/wechat/FAKE\n[ERROR] store unavailable") == \
        "/wechat/FAKE\\n[ERROR] store unavailable"
    assert shown("a\rb\x1b[31mc\x00") == "a\\rb\\x1b[31mc\\x00"
    assert shown("half \ud800 pair") == "half \\ud800 pair"
    assert shown("back\\nslash") == "back\\\\nslash"     # an escape cannot be faked


def test_shown_keeps_readable_text_and_caps_the_length():
    assert shown("订单 123456") == "订单 123456"
    assert shown("x" * 100, limit=10) == "x" * 10 + "...(+90)"
    assert shown(42) == "42"


@given(st.text())
def test_shown_is_always_one_printable_line(value):
    line = shown(value)
    assert line.isprintable()
    line.encode("utf-8")   # no lone surrogate left


def test_repeats_writes_one_line_per_interval_with_the_count(caplog):
    clock = FakeClock(1000.0)
    repeats = Repeats(10.0, clock=clock)
    logger = logging.getLogger("test.logsafe")
    with caplog.at_level(logging.WARNING, logger="test.logsafe"):
        for _ in range(500):
            repeats.log(logger, logging.WARNING, "bad-signature", "rejected reason=%s", "sig")
        repeats.log(logger, logging.WARNING, "other", "rejected reason=%s", "other")
        clock.advance(10.0)
        repeats.log(logger, logging.WARNING, "bad-signature", "rejected reason=%s", "sig")
    assert [r.getMessage() for r in caplog.records] == [
        "rejected reason=sig", "rejected reason=other", "rejected reason=sig repeated=499"]


def test_repeats_forgets_the_oldest_kind_past_its_cap(caplog):
    clock = FakeClock(0.0)
    repeats = Repeats(60.0, clock=clock, max_kinds=2)
    logger = logging.getLogger("test.logsafe")
    with caplog.at_level(logging.INFO, logger="test.logsafe"):
        for kind in ("a", "b", "c", "a"):
            repeats.log(logger, logging.INFO, kind, "kind=%s", kind)
    assert [r.getMessage() for r in caplog.records] == ["kind=a", "kind=b", "kind=c", "kind=a"]


def test_admit_says_when_a_line_may_go_out_and_how_many_were_held():
    clock = FakeClock(0.0)
    repeats = Repeats(5.0, clock=clock)
    assert [repeats.admit("k") for _ in range(4)] == [0, None, None, None]
    clock.advance(5.0)
    assert repeats.admit("k") == 3
