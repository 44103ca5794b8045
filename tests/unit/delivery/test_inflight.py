"""The limit of sends in flight: halved once for a burst of passing errors, grown back by one
with each answer, never below one or above the cap."""

from __future__ import annotations

import threading

import pytest

from webhook.delivery.inflight import InFlight
from webhook.testing import FakeClock


def test_starts_at_the_cap_and_counts_what_is_in_flight():
    sends = InFlight(4)
    assert (sends.limit, sends.free()) == (4, 4)
    started = [sends.start() for _ in range(3)]
    assert (sends.count, sends.free()) == (3, 1)
    sends.end(started[0], backed_off=False)
    assert (sends.count, sends.free(), sends.limit) == (2, 2, 4)


def test_a_burst_of_passing_errors_halves_the_limit_once_and_answers_grow_it_back():
    clock = FakeClock()
    sends = InFlight(16, timer=clock)
    started = [sends.start() for _ in range(16)]
    clock.advance(0.05)
    for at in started:                 # all answered "busy" together: one cut
        sends.end(at, backed_off=True)
    assert sends.limit == 8
    again = [sends.start() for _ in range(8)]
    clock.advance(0.05)
    sends.end(again[0], backed_off=True)   # started after the cut: cut again
    assert sends.limit == 4
    for at in again[1:]:
        sends.end(at, backed_off=True)
    assert sends.limit == 4
    for _ in range(20):
        sends.end(sends.start(), backed_off=False)
    assert sends.limit == 16


def test_never_below_one():
    clock = FakeClock()
    sends = InFlight(2, timer=clock)
    for _ in range(5):
        at = sends.start()
        clock.advance(1)
        sends.end(at, backed_off=True)
    assert (sends.limit, sends.free()) == (1, 1)


def test_wait_free_returns_when_a_send_ends():
    sends = InFlight(1)
    at = sends.start()
    assert sends.wait_free(0.01) == 0
    threading.Timer(0.05, lambda: sends.end(at, backed_off=False)).start()
    assert sends.wait_free(5.0) == 1


def test_a_cap_below_one_is_refused():
    with pytest.raises(ValueError):
        InFlight(0)
