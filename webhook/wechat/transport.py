"""The client's transport: HTTP/1.1 on the standard library's ``http.client``, connections
kept alive, behind requests' adapter interface (so a test still mounts its own).

A reply's send is one small JSON POST to one host, and the delivery process makes hundreds
a second: requests' own adapter (urllib3) spends more CPU on each than the rest of the send
together (bench/api_call.py prints both). A call through a proxy, with a client
certificate or streamed goes through requests' adapter as before.
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
from typing import Any
from urllib.parse import urlsplit

import certifi
import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers, select_proxy

__all__ = ["KeptAlive"]

_Key = tuple[str, str, int, Any]   # scheme, host, port, verify


class KeptAlive(BaseAdapter):
    """Up to ``connections`` idle connections kept per host; a call takes one (or opens
    one), and gives it back once the answer is read whole, unless either side closes it."""

    def __init__(self, connections: int) -> None:
        super().__init__()
        self._most = connections
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        # A session dropped without close() takes its idle connections with it.
        weakref.finalize(self, _close, self._idle)
        self._lock = threading.Lock()
        self._contexts: dict[Any, ssl.SSLContext] = {}
        self._other = HTTPAdapter(pool_connections=4, pool_maxsize=connections, max_retries=0)

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Mapping[str, str] | None = None) -> requests.Response:
        if stream or cert or select_proxy(request.url, proxies or {}):
            return self._other.send(request, stream=stream, timeout=timeout, verify=verify,
                                    cert=cert, proxies=proxies)
        url = urlsplit(request.url)
        key = (url.scheme, url.hostname or "", url.port or (443 if url.scheme == "https" else 80),
               verify)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        conn = self._take(key) or self._open(key, connect)
        target = url.path + (f"?{url.query}" if url.query else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "accept-encoding"}
        try:
            if conn.sock is None:
                conn.connect()
            conn.sock.settimeout(read)
            conn.request(request.method, target, body=request.body, headers=headers)
            answer = conn.getresponse()
            body = answer.read()
        except TimeoutError as exc:
            conn.close()
            raise requests.Timeout(exc, request=request) from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise requests.ConnectionError(exc, request=request) from None
        if answer.will_close:
            conn.close()
        else:
            self._give_back(key, conn)
        response = requests.Response()
        response.status_code, response.reason = answer.status, answer.reason
        response.headers = CaseInsensitiveDict(answer.getheaders())
        response.encoding = get_encoding_from_headers(response.headers)
        response._content, response._content_consumed = body, True
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        with self._lock:
            _close(self._idle)
        self._other.close()

    def _take(self, key: _Key) -> http.client.HTTPConnection | None:
        """An idle connection to ``key``'s host that the host has not closed meanwhile (a
        kept-alive connection it closed reads as ready: its end, or a stray byte)."""
        while True:
            with self._lock:
                conns = self._idle.get(key)
                if not conns:
                    return None
                conn = conns.pop()
            if conn.sock is not None and not _readable(conn.sock):
                return conn
            conn.close()

    def _give_back(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < self._most:
                conns.append(conn)
                return
        conn.close()

    def _open(self, key: _Key, timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port, verify = key
        if scheme != "https":
            return http.client.HTTPConnection(host, port, timeout=timeout)
        return http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=self._context(verify))

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


def _close(idle: dict[_Key, list[http.client.HTTPConnection]]) -> None:
    for conns in idle.values():
        for conn in conns:
            conn.close()
    idle.clear()
