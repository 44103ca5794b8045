"""Where a request ends in the bytes a connection sent so far, however they arrive; and gunicorn's
parser reading it from the bytes the worker's loop holds, never the socket."""

from __future__ import annotations

import pytest
from gunicorn.config import Config
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.http.parser import RequestParser
from hypothesis import given, strategies as st

from webhook.server.framing import MALFORMED, MORE, TOO_LARGE, Framer, Limits
from webhook.server.loopconn import HeldBytes, limits

LIMITS = Limits(line=2048, head=50 * 4098 + 4, chunk_line=4096, body=4096)


def request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("ascii") + b"\r\n" + body


PUSH = request("POST /wechat/wx1?nonce=1 HTTP/1.1\nHost: h\nContent-Length: 5\n", b"<xml>")
GET = request("GET /healthz HTTP/1.1\nHost: h\n")
CHUNKED = request("POST /wechat/wx1 HTTP/1.1\nTransfer-Encoding: chunked\n",
                  b"5\r\n<xml>\r\n3;ext=1\r\nabc\r\n0\r\n\r\n")
TRAILED = request("POST /wechat/wx1 HTTP/1.1\nTransfer-Encoding: gzip, chunked\n",
                  b"2\r\nab\r\n0\r\nX-Sum: 1\r\n\r\n")


def size(data: bytes, limits: Limits = LIMITS) -> int:
    return Framer(limits).size(data)


def arriving(data: bytes, cuts: list[int], limits: Limits = LIMITS) -> list[int]:
    """What the framer says after each piece, ``data`` cut at ``cuts``."""
    framer, said = Framer(limits), []
    for cut in [*sorted(set(cuts)), len(data)]:
        said.append(framer.size(data[:cut]))
    return said


@pytest.mark.parametrize("whole", [PUSH, GET, CHUNKED, TRAILED])
def test_a_whole_request_takes_all_its_bytes_and_no_more(whole):
    assert size(whole) == len(whole)
    assert size(whole + PUSH) == len(whole)                 # the next one, pipelined
    assert size(whole + PUSH[:10]) == len(whole)


@pytest.mark.parametrize("whole", [PUSH, GET, CHUNKED, TRAILED])
def test_part_of_a_request_needs_more(whole):
    for cut in range(len(whole)):
        assert size(whole[:cut]) == MORE, cut


@given(st.sampled_from([PUSH, GET, CHUNKED, TRAILED]), st.lists(st.integers(0, 200)))
def test_a_request_arriving_in_pieces_is_whole_once_its_last_byte_is_in(whole, cuts):
    cuts = [c for c in cuts if c < len(whole)]
    assert arriving(whole, cuts) == [MORE] * len(set(cuts)) + [len(whole)]


def test_a_body_over_the_limit_is_refused_from_its_head_alone():
    head = request("POST /wechat/wx1 HTTP/1.1\nContent-Length: 4097\n")
    assert size(head) == TOO_LARGE
    assert size(request("POST /wechat/wx1 HTTP/1.1\nContent-Length: 4096\n")) == MORE


def test_a_chunked_body_over_the_limit_is_refused_as_its_chunks_say_so():
    body = b"800\r\n" + b"x" * 2048 + b"\r\n801\r\n"
    assert size(request("POST / HTTP/1.1\nTransfer-Encoding: chunked\n", body)) == TOO_LARGE


def test_chunked_framing_larger_than_the_data_it_carries_is_refused():
    """One-byte chunks with long extensions: a few KiB of data in a megabyte."""
    chunk = b"1;" + b"e" * 4000 + b"\r\nx\r\n"
    data = request("POST / HTTP/1.1\nTransfer-Encoding: chunked\n", chunk * 3)
    assert arriving(data, [len(data) - 1]) == [MORE, MORE]
    assert size(data + chunk) == TOO_LARGE


@pytest.mark.parametrize("body", [b"zz\r\nab\r\n0\r\n\r\n",           # not hex
                                  b"\r\n",                            # no size
                                  b"2\r\nabX\r\n0\r\n\r\n",           # no CRLF after the data
                                  b"2;a\rb\r\nab\r\n0\r\n\r\n",       # a bare CR in an extension
                                  b"f" * 5000],                       # a size line with no end
                         ids=["hex", "size", "crlf", "cr", "line"])
def test_chunked_framing_that_cannot_be_read_is_malformed(body):
    assert size(request("POST / HTTP/1.1\nTransfer-Encoding: chunked\n", body)) == MALFORMED


@pytest.mark.parametrize("head", [
    "POST / HTTP/1.1\nContent-Length: 5\nContent-Length: 5\n",          # two lengths
    "POST / HTTP/1.1\nContent-Length: -5\n",                            # not a length
    "POST / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 5\n",  # both
    "POST / HTTP/1.1\nTransfer-Encoding: gzip\n",                       # not chunked last
])
def test_a_head_gunicorn_refuses_goes_to_it_without_its_body(head):
    data = request(head)
    assert size(data + b"<xml>") == len(data)


def test_a_head_over_gunicorns_limits_goes_to_it_as_soon_as_that_shows():
    long_line = b"GET /" + b"a" * 2100
    assert size(long_line[:2000]) == MORE
    assert size(long_line) == len(long_line)
    header = b"X-Pad: " + b"p" * 4000 + b"\r\n"
    many = b"GET / HTTP/1.1\r\n" + header * 52
    assert size(many[:-len(header)]) == MORE
    assert size(many) == len(many)
    bare = b"GET / HTTP/1.1\nHost: h"
    assert size(bare) == len(bare)


def test_a_request_line_after_one_empty_line_is_measured_as_gunicorn_does():
    assert size(b"\r\n" + GET) == 2 + len(GET)


def test_the_head_asks_for_100_continue_before_the_body():
    head = request("POST /wechat/wx1 HTTP/1.1\nExpect: 100-continue\nContent-Length: 5\n")
    framer = Framer(LIMITS)
    assert framer.size(head[:-2]) == MORE and not framer.expects_continue(head[:-2])
    assert framer.size(head) == MORE and framer.expects_continue(head)
    assert framer.size(head + b"<xml>") == len(head) + 5


def gunicorn_config(**settings) -> Config:
    cfg = Config()
    for key, value in {"limit_request_line": 2048, "limit_request_fields": 50,
                       "limit_request_field_size": 4096, **settings}.items():
        cfg.set(key, value)
    return cfg


def held_parser(cfg: Config, data: bytes) -> RequestParser:
    parser = RequestParser(cfg, (), ("127.0.0.1", 1))
    parser.unreader = HeldBytes()
    parser.unreader.hold(data)
    return parser


def test_the_limits_are_gunicorns():
    assert limits(gunicorn_config(), 4096) == LIMITS
    unlimited = limits(gunicorn_config(limit_request_line=0, limit_request_field_size=0), 1)
    assert (unlimited.line, unlimited.chunk_line) == (8190, 8190)


def test_gunicorns_parser_reads_a_request_and_its_body_from_the_held_bytes():
    parser = held_parser(gunicorn_config(), CHUNKED + PUSH)
    req = next(parser)
    assert (req.method, req.path, req.body.read()) == ("POST", "/wechat/wx1", b"<xml>abc")
    assert next(parser).body.read() == b"<xml>"


@pytest.mark.parametrize("data, error", [
    (b"GET /" + b"a" * 2100, LimitRequestLine),
    (b"GET / HTTP/1.1\r\n" + (b"X-Pad: " + b"p" * 4000 + b"\r\n") * 52, LimitRequestHeaders),
], ids=["line", "headers"])
def test_a_head_over_the_limits_fails_in_the_parser_from_what_the_loop_read(data, error):
    """gunicorn answers these 414 and 431, as when it read the socket itself."""
    cfg = gunicorn_config()
    assert Framer(limits(cfg, 4096)).size(data) == len(data)
    with pytest.raises(error):
        next(held_parser(cfg, data))
