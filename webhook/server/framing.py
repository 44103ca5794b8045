"""Where an HTTP/1.1 request ends in the bytes a connection has sent so far, measured as they
arrive: the worker's loop hands a request to gunicorn's parser only once it is whole.

Only the framing is read (the end of the head, Content-Length, chunked coding), the way
gunicorn's parser reads it; the parser still parses the request and refuses what it refuses.
A head the parser will refuse (a request line or header block over gunicorn's limits, a bare
LF) is "whole" as soon as that shows: waiting for the rest would only delay the parser's 4xx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Limits", "Framer", "MORE", "TOO_LARGE", "MALFORMED"]

MORE = 0            # not all of the request yet
TOO_LARGE = -1      # its body is over the limit: 413, without reading it
MALFORMED = -2      # its chunked body cannot be read: 400

_HEAD_END = b"\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)[ \t]*(?=\r\n)", re.IGNORECASE)
_CODING = re.compile(rb"\r\ntransfer-encoding:([^\r\n]*)", re.IGNORECASE)
_CONTINUE = re.compile(rb"\r\nexpect:[ \t]*100-continue[ \t]*(?=\r\n)", re.IGNORECASE)
_HEX = b"0123456789abcdefABCDEF"


@dataclass(frozen=True, slots=True)
class Limits:
    """``line``: the request line (gunicorn's limit_request_line); ``head``: the header block
    (its max_buffer_headers); ``chunk_line``: a chunk-size line (its limit_request_field_size);
    ``body``: the body, after its chunked coding if any (the server's max_body)."""

    line: int
    head: int
    chunk_line: int
    body: int


class Framer:
    """Measures one request at a time of one connection. ``size(data)`` is given the bytes
    read so far from the start of the request, each time more arrive; ``reset()`` once the
    request is taken, before the next one. It resumes where it stopped, so a request sent a
    byte at a time costs no more to measure than one sent at once."""

    __slots__ = ("limits", "_scanned", "_body", "_end", "_chunk", "_total")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.reset()

    def reset(self) -> None:
        self._scanned = 0     # bytes of the head looked at, with no end of head in them
        self._body = 0        # where the body starts, once the head is whole
        self._end = 0         # where a body of declared length ends
        self._chunk = 0       # a chunked body: where the next chunk-size line starts
        self._total = 0       # ... and how many bytes of data its chunks held so far

    def expects_continue(self, data: bytes | bytearray) -> bool:
        """The whole head asks for ``100 Continue`` before the client sends the body."""
        return self._body > 0 and _CONTINUE.search(data, 0, self._body - 2) is not None

    def size(self, data: bytes | bytearray) -> int:
        """How many bytes of ``data`` the request takes, once they are all there (> 0);
        ``MORE``, ``TOO_LARGE`` or ``MALFORMED`` otherwise."""
        if not self._body:
            found = self._head(data)
            if found is not None:
                return found
        if self._end:
            return self._end if len(data) >= self._end else MORE
        if self._chunk:
            return self._chunked(data)
        return self._body

    def _head(self, data: bytes | bytearray) -> int | None:
        """None once the head is whole and its body's framing is known; else what ``size``
        says."""
        end = data.find(_HEAD_END, max(0, self._scanned - 3))
        if end < 0:
            refused = self._refused(data)
            self._scanned = len(data)
            return len(data) if refused else MORE
        self._body = body = end + 4
        head = end + 2          # through the last header's CRLF
        lengths = _LENGTH.findall(data, 0, head)
        codings = _CODING.findall(data, 0, head)
        if codings:
            if not lengths and _last_coding(codings) == b"chunked":
                self._chunk = body
            return None         # otherwise gunicorn refuses it (RFC 9112 section 6.3)
        if len(lengths) == 1:   # none: no body; more than one: gunicorn refuses it
            length = int(lengths[0])
            if length > self.limits.body:
                return TOO_LARGE
            self._end = body + length
        return None

    def _refused(self, data: bytes | bytearray) -> bool:
        """Whether gunicorn's parser refuses this head before its end, as it reads it: the
        request line or the header block over its limit, or a bare LF."""
        limits, start = self.limits, 2 if data.startswith(b"\r\n") else 0
        line_end = data.find(b"\r\n", start)
        if line_end < 0:
            if len(data) - start - 2 > limits.line:
                return True
        elif line_end - start > limits.line or len(data) - line_end - 2 > limits.head:
            return True
        scanned = self._scanned
        return data.count(b"\n", scanned) != data.count(b"\r\n", max(0, scanned - 1))

    def _chunked(self, data: bytes | bytearray) -> int:
        """Walks the chunks from where it stopped; the end of the trailer section once all
        are in. Its framing may not take more room than the data it carries (a body of
        one-byte chunks with long extensions would otherwise pass for a small one)."""
        limits, at, total, size = self.limits, self._chunk, self._total, len(data)
        if size - self._body > 2 * limits.body + limits.chunk_line:
            return TOO_LARGE
        while True:
            eol = data.find(b"\r\n", at, at + limits.chunk_line + 2)
            if eol < 0:
                return MALFORMED if size - at > limits.chunk_line else MORE
            digits, semicolon, extension = bytes(data[at:eol]).partition(b";")
            if semicolon:
                digits = digits.rstrip(b" \t")
                if b"\r" in extension:
                    return MALFORMED
            if not digits or digits.translate(None, _HEX):
                return MALFORMED
            chunk = int(digits, 16)
            total += chunk
            if total > limits.body:
                return TOO_LARGE
            if chunk == 0:
                return self._trailers(data, eol + 2)
            if size < eol + 2 + chunk + 2:
                return MORE
            if data[eol + 2 + chunk:eol + 4 + chunk] != b"\r\n":
                return MALFORMED
            at = self._chunk = eol + 4 + chunk
            self._total = total

    def _trailers(self, data: bytes | bytearray, at: int) -> int:
        if data.startswith(b"\r\n", at):
            return at + 2
        end = data.find(_HEAD_END, at)
        if end < 0:
            return MALFORMED if len(data) - at > self.limits.head else MORE
        return end + 4


def _last_coding(values: list[bytes]) -> bytes:
    """The last transfer coding named, over every Transfer-Encoding line."""
    return b",".join(values).rsplit(b",", 1)[-1].strip(b" \t").lower()
