"""The client's transport: HTTP/1.1 on kept-alive sockets of its own, behind requests' adapter
interface (so a test still mounts its own).

A reply's send is one small JSON POST to one host, and the delivery process makes hundreds
a second: requests' own adapter (urllib3) spends more CPU on each than the rest of the send
together, and ``http.client`` parses every answer's headers with the email package. Here a
request goes out in one write and its answer is read by the little HTTP/1.1 it takes (a
status line, headers, a body framed by Content-Length, chunks or the connection's end);
bench/api_call.py prints what each costs. A call through a proxy, with a client certificate,
streamed, or with a body that is not bytes goes through requests' adapter as before.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
import weakref
from collections.abc import Mapping
from typing import Any, BinaryIO
from urllib.parse import SplitResult, urlsplit

import certifi
import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers, select_proxy

__all__ = ["KeptAlive"]

_Key = tuple[str, str, int, Any]   # scheme, host, port, verify
MAX_LINE = 65536                   # bytes of a status or header line, at most
MAX_HEADERS = 100


class _Link:
    """One connection: its socket, and what reads it."""

    __slots__ = ("sock", "reader")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.reader = sock, sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class KeptAlive(BaseAdapter):
    """Up to ``connections`` idle connections kept per host; a call takes one (or opens
    one), and gives it back once the answer is read whole, unless either side closes it."""

    def __init__(self, connections: int) -> None:
        super().__init__()
        self._most = connections
        self._idle: dict[_Key, list[_Link]] = {}
        # A session dropped without close() takes its idle connections with it.
        weakref.finalize(self, _close, self._idle)
        self._lock = threading.Lock()
        self._contexts: dict[Any, ssl.SSLContext] = {}
        self._other = HTTPAdapter(pool_connections=4, pool_maxsize=connections, max_retries=0)

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Mapping[str, str] | None = None) -> requests.Response:
        body = request.body.encode("iso-8859-1") if isinstance(request.body, str) \
            else request.body
        if stream or cert or select_proxy(request.url, proxies or {}) or \
                not isinstance(body, (bytes, type(None))):
            return self._other.send(request, stream=stream, timeout=timeout, verify=verify,
                                    cert=cert, proxies=proxies)
        url = urlsplit(request.url)
        key = (url.scheme, url.hostname or "", url.port or (443 if url.scheme == "https" else 80),
               verify)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        link = self._take(key)
        try:
            link = link or self._open(key, connect)
            link.sock.settimeout(read)
            link.sock.sendall(_request(request, url, key[2], body))
            status, reason, headers, content, closes = _answer(link.reader, request.method)
        except TimeoutError as exc:
            if link is not None:
                link.close()
            raise requests.Timeout(exc, request=request) from None
        except (OSError, http.client.HTTPException) as exc:
            if link is not None:
                link.close()
            raise requests.ConnectionError(exc, request=request) from None
        if closes:
            link.close()
        else:
            self._give_back(key, link)
        response = requests.Response()
        response.status_code, response.reason = status, reason
        response.headers = CaseInsensitiveDict(headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response._content, response._content_consumed = content, True
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        with self._lock:
            _close(self._idle)
        self._other.close()

    def _take(self, key: _Key) -> _Link | None:
        """An idle connection to ``key``'s host that the host has not closed meanwhile (a
        kept-alive connection it closed reads as ready: its end, or a stray byte)."""
        while True:
            with self._lock:
                links = self._idle.get(key)
                if not links:
                    return None
                link = links.pop()
            if not _readable(link.sock):
                return link
            link.close()

    def _give_back(self, key: _Key, link: _Link) -> None:
        with self._lock:
            links = self._idle.setdefault(key, [])
            if len(links) < self._most:
                links.append(link)
                return
        link.close()

    def _open(self, key: _Key, timeout: float | None) -> _Link:
        scheme, host, port, verify = key
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._context(verify).wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return _Link(sock)

    def _context(self, verify: Any) -> ssl.SSLContext:
        """TLS as requests does it: certifi's CAs, or the bundle ``verify`` names; none
        checked if ``verify`` is False."""
        with self._lock:
            context = self._contexts.get(verify)
            if context is None:
                if verify is False:
                    context = ssl.create_default_context()
                    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                elif isinstance(verify, str) and os.path.isdir(verify):
                    context = ssl.create_default_context(capath=verify)
                else:
                    context = ssl.create_default_context(
                        cafile=verify if isinstance(verify, str) else certifi.where())
                self._contexts[verify] = context
            return context


def _readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has something to read now (poll, not select: any descriptor number)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _close(idle: dict[_Key, list[_Link]]) -> None:
    for links in idle.values():
        for link in links:
            link.close()
    idle.clear()


def _request(request: requests.PreparedRequest, url: SplitResult, port: int,
             body: bytes | None) -> bytes:
    """The request's head and body, to go out in one write."""
    host = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname or ""
    if port != (443 if url.scheme == "https" else 80):
        host = f"{host}:{port}"
    lines = [f"{request.method} {url.path or '/'}{'?' + url.query if url.query else ''} "
             f"HTTP/1.1", f"Host: {host}"]
    for name, value in request.headers.items():
        if name.lower() not in ("host", "accept-encoding"):   # no compressed answers
            if isinstance(value, bytes):
                value = value.decode("iso-8859-1")
            lines.append(f"{name}: {value}")
    return "\r\n".join([*lines, "", ""]).encode("iso-8859-1") + (body or b"")


def _answer(reader: BinaryIO, method: str | None) -> tuple[int, str, list[tuple[str, str]],
                                                           bytes, bool]:
    """(status, reason, headers, body, whether the connection ends with it), read whole."""
    while True:
        line = _line(reader)
        if not line:
            raise http.client.RemoteDisconnected("closed without an answer")
        version, _, rest = line.decode("iso-8859-1").rstrip("\r\n").partition(" ")
        status, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not (status.isdigit() and len(status) == 3):
            raise http.client.BadStatusLine(line[:100].decode("iso-8859-1"))
        headers = _headers(reader)
        if not 100 <= int(status) < 200:
            break
    fields = {name.lower(): value for name, value in headers}
    tokens = {token.strip().lower() for token in fields.get("connection", "").split(",")}
    closes = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
    if int(status) in (204, 304) or method == "HEAD":
        body = b""
    elif "chunked" in fields.get("transfer-encoding", "").lower():
        body = _chunks(reader)
    elif "content-length" in fields:
        try:
            size = int(fields["content-length"])
        except ValueError:
            raise http.client.HTTPException("unreadable Content-Length") from None
        body = reader.read(size)
        if len(body) < size:
            raise http.client.IncompleteRead(body, size - len(body))
    else:
        body, closes = reader.read(), True
    return int(status), reason.strip(), headers, body, closes


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong("header line")
    return line


def _headers(reader: BinaryIO) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    while (line := _line(reader)) not in (b"\r\n", b"\n", b""):
        if len(headers) >= MAX_HEADERS:
            raise http.client.HTTPException(f"more than {MAX_HEADERS} headers")
        name, _, value = line.decode("iso-8859-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return headers


def _chunks(reader: BinaryIO) -> bytes:
    parts = []
    while True:
        size_line = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise http.client.IncompleteRead(b"".join(parts)) from None
        if size == 0:
            _headers(reader)   # the trailer
            return b"".join(parts)
        part = reader.read(size)
        if len(part) < size or reader.read(2) != b"\r\n":
            raise http.client.IncompleteRead(b"".join(parts) + part)
        parts.append(part)
