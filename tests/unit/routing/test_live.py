"""LiveRouter: reload on change without a gap, keep the previous rules on a bad edit."""

from __future__ import annotations

import logging
import time

import pytest

from handlers import build_router
from webhook.errors import ConfigError
from webhook.routing.live import LiveRouter
from webhook.testing.factories import make_text

RULE = '[[rule]]\nname = "{name}"\nkeywords = ["hours"]\nreply.text = "x"\n'


def names(live: LiveRouter) -> tuple[str, ...]:
    return live.current.route(make_text("hours"), appid="wx1").names


def wait_for(predicate, timeout=2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(RULE.format(name="first"), encoding="utf-8")
    return path


def test_reloads_within_two_seconds(rules):
    live = LiveRouter(lambda: build_router(str(rules)), str(rules), interval=0.5)
    live.start()
    try:
        assert names(live) == ("first",)
        rules.write_text(RULE.format(name="second-version"), encoding="utf-8")
        assert wait_for(lambda: names(live) == ("second-version",))
    finally:
        live.stop()


def test_bad_edit_keeps_previous_rules_and_says_where(rules, caplog):
    live = LiveRouter(lambda: build_router(str(rules)), str(rules))
    before = live.current
    rules.write_text(RULE.format(name="x") + "oops = 1\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        assert live.check() is False
    assert live.current is before
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"{rules}:5: oops: unknown key" in lines[0]
    assert live.check() is False and len(caplog.records) == 1  # said once per edit
    rules.write_text(RULE.format(name="fixed"), encoding="utf-8")
    assert live.check() is True and names(live) == ("fixed",)


def test_the_reload_status_says_when_and_what_went_wrong(rules, clock):
    live = LiveRouter(lambda: build_router(str(rules)), str(rules), clock=clock)
    assert (live.path, live.loaded_at, live.error) == (str(rules), clock(), None)
    clock.advance(60)
    rules.write_text(RULE.format(name="x") + "oops = 1\n", encoding="utf-8")
    live.check()
    assert live.loaded_at == clock() - 60 and f"{rules}:5: oops: unknown key" in live.error
    rules.write_text(RULE.format(name="fixed"), encoding="utf-8")
    live.check()
    assert (live.loaded_at, live.error) == (clock(), None)
    rules.unlink()
    live.check()
    assert live.error == "file missing"


def test_missing_file_keeps_previous_rules(rules):
    live = LiveRouter(lambda: build_router(str(rules)), str(rules))
    rules.unlink()
    assert live.check() is False and names(live) == ("first",)


def test_first_load_errors_stop_the_start(rules):
    rules.write_text("[[rule]]\nname = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        LiveRouter(lambda: build_router(str(rules)), str(rules))


def test_without_a_file_nothing_polls():
    live = LiveRouter(lambda: build_router(None), None)
    live.start()
    assert live.check() is False and not names(live)
    live.stop()
