"""The worker: the master's bookkeeping of where each worker keeps its connection count, and
which requests the worker's loop answers itself."""

from types import SimpleNamespace

from webhook.server import fairworker


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


def request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("ascii") + b"\r\n" + body


PUSH = request("POST /wechat/wx1?nonce=1 HTTP/1.1\nHost: h\nContent-Length: 5\n", b"<xml>")


def test_a_whole_request_is_one_with_its_head_and_all_of_its_body():
    assert fairworker.whole_request(PUSH, len(PUSH))
    padded = bytearray(PUSH) + b"\0" * 100      # what lies past size is not looked at
    assert fairworker.whole_request(padded, len(PUSH))
    get = request("GET /healthz HTTP/1.1\nHost: h\n")
    assert fairworker.whole_request(get, len(get))
    lower = request("POST /wechat/wx1 HTTP/1.1\ncontent-length:5\n", b"<xml>")
    assert fairworker.whole_request(lower, len(lower))


def test_part_of_a_request_or_more_than_one_is_not_whole():
    """What gunicorn's parser would wait for, or read past, goes to a pool thread."""
    assert not fairworker.whole_request(PUSH, len(PUSH) - 1)                 # body not all in
    assert not fairworker.whole_request(PUSH, PUSH.index(b"\r\n\r\n") + 2)   # head not all in
    assert not fairworker.whole_request(PUSH + PUSH, 2 * len(PUSH))          # pipelined
    chunked = request("POST /wechat/wx1 HTTP/1.1\nTransfer-Encoding: chunked\n",
                      b"5\r\n<xml>\r\n0\r\n\r\n")
    assert not fairworker.whole_request(chunked, len(chunked))
    twice = request("POST /wechat/wx1 HTTP/1.1\nContent-Length: 5\nContent-Length: 5\n", b"<xml>")
    assert not fairworker.whole_request(twice, len(twice))
    longer = request("POST /wechat/wx1 HTTP/1.1\nContent-Length: 5\n", b"<xml><xml>")
    assert not fairworker.whole_request(longer, len(longer))                 # more than declared


def loop_worker(*paths: str) -> fairworker.FairThreadWorker:
    """A worker as ``run`` prepares it for an app with these ``inline_paths``."""
    worker = fairworker.FairThreadWorker.__new__(fairworker.FairThreadWorker)
    worker._quick = fairworker.request_starts(paths)
    return worker


def test_the_loop_answers_a_whole_request_on_an_inline_path_only():
    worker = loop_worker("/wechat/")
    assert worker.on_loop(None, PUSH)
    assert not worker.on_loop(None, b"POST /apps/wx1/login HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    chunked = request("POST /wechat/wx1 HTTP/1.1\nTransfer-Encoding: chunked\n",
                      b"5\r\n<xml>\r\n0\r\n\r\n")
    assert not worker.on_loop(None, chunked)
