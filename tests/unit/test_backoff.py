"""One backoff formula, and the loop every background thread runs: a failing step backs off,
its error is logged once per interval with a count, a success starts over."""

from __future__ import annotations

import logging
import random

from webhook.backoff import Loop, backoff
from webhook.logsafe import Repeats
from webhook.testing.clock import FakeClock


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, base=1.0, cap=10.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert backoff(10_000, base=1.0, cap=300.0) == 300.0


def test_backoff_with_jitter_stays_between_half_and_all_of_it() -> None:
    rng = random.Random(3)
    delays = [backoff(4, base=1.0, cap=10.0, rng=rng) for _ in range(200)]
    assert all(5.0 <= d < 10.0 for d in delays)
    assert max(delays) - min(delays) > 3.0


class FakeStop:
    """A stop event that records every wait and is set after ``rounds`` of them."""

    def __init__(self, rounds: int, clock: FakeClock) -> None:
        self.waits: list[float] = []
        self._rounds, self._clock = rounds, clock

    def is_set(self) -> bool:
        return len(self.waits) >= self._rounds

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self._clock.advance(seconds)
        return self.is_set()


def test_a_failing_step_backs_off_logs_once_per_interval_and_starts_over_after_a_success(
        caplog) -> None:
    clock = FakeClock(0)
    outcomes = iter([OSError("disk full")] * 8 + [1.0] + [OSError("disk full")] * 3)
    stop = FakeStop(12, clock)
    beats: list[str] = []

    def step() -> float:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    loop = Loop("inbox ingest", step, stop=stop, base=0.1, cap=2.0,
                repeats=Repeats(10.0, clock=clock), beat=lambda: beats.append("round"))
    with caplog.at_level(logging.ERROR, logger="webhook.backoff"):
        loop.run()
    assert stop.waits == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 1.0, 0.1, 0.2, 0.4]
    assert beats == ["round"] * 12                  # every round, failed or not
    lines = [r for r in caplog.records if "inbox ingest failed" in r.getMessage()]
    # 9.1 s of failures: one line; the next run starts 10.1 s in: a line with the count.
    assert [r.exc_info is not None for r in lines] == [True, True]
    assert "error=OSError: disk full; failures=1" in lines[0].getMessage()
    assert lines[1].getMessage().endswith("repeated=7")
