"""The master's bookkeeping of where each worker keeps its connection count."""

from types import SimpleNamespace

from webhook import fairworker


def spawn(server: SimpleNamespace, pid: int) -> SimpleNamespace:
    """What gunicorn's master does: pre_fork with the new worker, then it joins WORKERS."""
    worker = SimpleNamespace()
    fairworker.take_slot(server, worker)
    server.WORKERS[pid] = worker
    return worker


def test_each_worker_gets_a_place_its_live_siblings_do_not_hold():
    server = SimpleNamespace(WORKERS={})
    first, second, third = (spawn(server, pid) for pid in (101, 102, 103))
    assert (first.slot, second.slot, third.slot) == (0, 1, 2)


def test_a_dead_workers_place_is_given_again_and_counts_for_nothing_meanwhile():
    server = SimpleNamespace(WORKERS={})
    spawn(server, 101)
    killed = spawn(server, 102)
    fairworker._counts[killed.slot] = 40            # it held 40 connections when it was killed
    fairworker.free_slot(server.WORKERS.pop(102))
    assert fairworker._counts[killed.slot] == fairworker._ABSENT
    assert spawn(server, 104).slot == killed.slot


def test_workers_beyond_the_page_have_no_place():
    server = SimpleNamespace(WORKERS={})
    for pid in range(fairworker.SLOTS):
        spawn(server, pid)
    extra = spawn(server, 10_000)
    assert extra.slot is None
    fairworker.free_slot(extra)                     # nothing to free, nothing breaks
