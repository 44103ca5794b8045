"""WeChatClient over a fake transport adapter (the test seam) and over real loopback sockets."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from webhook.errors import Permanent, Retryable, TokenInvalid
from webhook.wechat.client import POOL_SIZE, WeChatClient, scrub
from webhook.wechat.transport import KeptAlive

TOKEN = "ACCESS-TOKEN-SECRET-VALUE-123"
BASE = "https://api.example.test"


class FakeTransport(BaseAdapter):
    """Answers queued replies in order and records every request (no sockets)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[Any] = []
        self.requests: list[tuple[requests.PreparedRequest, Any]] = []

    def reply(self, body: Any = None, *, status: int = 200, raw: bytes | None = None,
              headers: dict[str, str] | None = None) -> FakeTransport:
        content = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        self.answers.append((status, content, headers or {"Content-Type": "application/json"}))
        return self

    def fail(self, make: Callable[[requests.PreparedRequest], Exception]) -> FakeTransport:
        self.answers.append(make)
        return self

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        self.requests.append((request, timeout))
        answer = self.answers.pop(0)
        if callable(answer):
            raise answer(request)
        response = requests.Response()
        response.status_code, response._content = answer[0], answer[1]
        response.headers = CaseInsensitiveDict(answer[2])
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def client(transport: FakeTransport) -> WeChatClient:
    session = requests.Session()
    session.mount("https://", transport)
    return WeChatClient(BASE + "/", session=session)


def sent(transport: FakeTransport, index: int = -1) -> tuple[str, dict[str, list[str]], Any]:
    """(path, query, JSON body or None) of a recorded request."""
    request = transport.requests[index][0]
    url = urlsplit(request.url)
    body = request.body
    payload = json.loads(body) if isinstance(body, (str, bytes)) and body[:1] in ("{", b"{") \
        else None
    return url.path, parse_qs(url.query), payload


def test_stable_token_posts_json_and_returns_grant(client, transport):
    transport.reply({"access_token": TOKEN, "expires_in": 7200})
    grant = client.stable_token(appid="wxA", secret="S3CRET", force_refresh=True)
    assert grant.access_token == TOKEN and grant.expires_in == 7200
    assert TOKEN not in repr(grant)
    request, timeout = transport.requests[0]
    assert request.method == "POST" and request.url == BASE + "/cgi-bin/stable_token"
    assert json.loads(request.body) == {"grant_type": "client_credential", "appid": "wxA",
                                        "secret": "S3CRET", "force_refresh": True}
    assert timeout == client.token_timeout


def test_classic_token_is_a_get_with_query(client, transport):
    transport.reply({"access_token": TOKEN, "expires_in": "7200"})
    assert client.token(appid="wxA", secret="S").expires_in == 7200
    path, query, _ = sent(transport)
    assert path == "/cgi-bin/token"
    assert query == {"grant_type": ["client_credential"], "appid": ["wxA"], "secret": ["S"]}


@pytest.mark.parametrize("body", [{"errmsg": "ok"}, {}, {"errcode": 0, "errmsg": "ok"}])
def test_send_missing_errcode_is_success(client, transport, body):
    transport.reply(body)
    client.send(access_token=TOKEN, touser="oUser", payload={"msgtype": "text", "touser": "x",
                                                            "text": {"content": "hi"}})
    path, query, payload = sent(transport)
    assert path == "/cgi-bin/message/custom/send" and query == {"access_token": [TOKEN]}
    assert payload == {"touser": "oUser", "msgtype": "text", "text": {"content": "hi"}}
    assert transport.requests[0][1] == (3.05, 10)


@pytest.mark.parametrize("errcode,kind", [(40001, TokenInvalid), (42001, TokenInvalid),
                                          (40014, TokenInvalid), (-1, Retryable),
                                          (45011, Retryable), (45015, Permanent),
                                          (45047, Permanent), ("40003", Permanent)])
def test_errcodes_map_to_the_exception_tree(client, transport, errcode, kind):
    transport.reply({"errcode": errcode, "errmsg": f"bad {TOKEN} rid: 1"})
    with pytest.raises(kind) as caught:
        client.send(access_token=TOKEN, touser="o", payload={"msgtype": "text"})
    assert caught.value.errcode == int(errcode)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("status,raw,kind,errcode", [
    (502, b"<html><body>502 Bad Gateway</body></html>", Retryable, 502),
    (503, b"", Retryable, 503),
    (429, b"slow down", Retryable, 429),
    (200, b"<html>captive portal</html>", Retryable, -1),
    (200, b'{"errcode":0,"errm', Retryable, -1),
    (200, b"[1, 2]", Retryable, -1),
    (200, b'{"errcode": "zero"}', Retryable, -1),
    (200, b"[" * 100000, Retryable, -1),
    (404, b"not found", Permanent, 404),
    (500, b'{"errcode": 45015, "errmsg": "x"}', Permanent, 45015),
    # Half a surrogate pair: no store or answer could take the text later
    (200, b'{"errcode": 45015, "errmsg": "\\ud800"}', Retryable, -1),
    (200, b'{"errcode": 0, "\\udfff": 1}', Retryable, -1),
])
def test_garbage_answers_never_crash(client, transport, status, raw, kind, errcode):
    transport.reply(raw=raw, status=status, headers={"Content-Type": "text/html"})
    with pytest.raises(kind) as caught:
        client.send(access_token=TOKEN, touser="o", payload={})
    assert caught.value.errcode == errcode
    assert len(str(caught.value)) < 120


@pytest.mark.parametrize("make", [
    lambda r: requests.ConnectTimeout(f"Max retries exceeded with url: {r.url}"),
    lambda r: requests.ReadTimeout(f"Read timed out. url: {r.url}"),
    lambda r: requests.ConnectionError(f"Connection reset by peer: {r.url}"),
    lambda r: requests.exceptions.ChunkedEncodingError(f"IncompleteRead {r.url}"),
    lambda r: requests.exceptions.InvalidURL(f"bad {r.url}"),
])
def test_transport_failures_are_retryable_and_never_show_the_token(client, transport, make,
                                                                   caplog):
    transport.fail(make)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Retryable) as caught:
        client.send(access_token=TOKEN, touser="o", payload={})
    assert caught.value.errcode == -1
    rendered = "".join(traceback.format_exception(caught.value))
    assert TOKEN not in rendered and caught.value.__context__ is None
    assert TOKEN not in caplog.text


def test_urllib3_request_lines_are_scrubbed(caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s', "https", "api", 443, "POST",
        f"/cgi-bin/message/custom/send?access_token={TOKEN}", "HTTP/1.1", 200, None)
    logging.getLogger("urllib3.util.retry").debug(
        "Incremented Retry for (url='%s'): %r", f"/x?access_token={TOKEN}", None)
    assert caplog.text.count("access_token=***") == 2 and TOKEN not in caplog.text
    assert scrub("/sns/jscode2session?appid=a&secret=s&js_code=c") == \
        "/sns/jscode2session?appid=a&secret=***&js_code=***"


def test_upload_media_is_multipart_with_part_media(client, transport):
    transport.reply({"type": "image", "media_id": "MEDIA1", "created_at": "1672500000"})
    assert client.upload_media(access_token=TOKEN, filename="cat.png", data=b"\x89PNG") == "MEDIA1"
    request = transport.requests[0][0]
    _, query, _ = sent(transport)
    assert query == {"type": ["image"], "access_token": [TOKEN]}
    assert b'name="media"; filename="cat.png"' in request.body
    assert b"Content-Type: image/png" in request.body


def test_get_media_bytes_or_json_error(client, transport):
    transport.reply(raw=b"\xff\xd8jpeg", headers={"Content-Type": "image/jpeg"})
    transport.reply({"errcode": 40007, "errmsg": "invalid media_id"},
                    headers={"Content-Type": "text/plain"})
    assert client.get_media(access_token=TOKEN, media_id="M") == b"\xff\xd8jpeg"
    with pytest.raises(Permanent) as caught:
        client.get_media(access_token=TOKEN, media_id="M")
    assert caught.value.errcode == 40007


def test_login_and_open_data_calls(client, transport):
    transport.reply({"openid": "o1", "session_key": "k"})
    transport.reply({"errcode": 0, "data_list": [{"cloud_id": "c", "json": "{}"}]})
    transport.reply({"errcode": 0, "phone_info": {"phoneNumber": "1"}})
    assert client.code2session(appid="wxA", secret="S", js_code="C")["openid"] == "o1"
    path, query, _ = sent(transport)
    assert path == "/sns/jscode2session" and query["grant_type"] == ["authorization_code"]
    assert client.get_open_data(access_token=TOKEN, cloudid_list=["c"], openid="o1")[0][
        "cloud_id"] == "c"
    path, query, body = sent(transport)
    assert path == "/wxa/getopendata" and query["openid"] == ["o1"]
    assert body == {"cloudid_list": ["c"]}
    assert client.get_phone_number(access_token=TOKEN, code="pc") == {"phoneNumber": "1"}
    assert sent(transport)[2] == {"code": "pc"}


def test_typing_path_and_body(client, transport):
    transport.reply({"errcode": 0})
    client.typing(access_token=TOKEN, touser="o", command="CancelTyping")
    path, _, body = sent(transport)
    assert path == "/cgi-bin/message/custom/business/typing"
    assert body == {"touser": "o", "command": "CancelTyping"}


def test_token_answer_without_token_is_retryable(client, transport):
    transport.reply({"expires_in": 7200})
    with pytest.raises(Retryable):
        client.stable_token(appid="a", secret="s")


def test_a_client_keeps_one_session_with_a_sized_pool_and_no_transport_retries():
    client = WeChatClient("https://api.weixin.qq.com")
    adapter = client.session.get_adapter("https://api.weixin.qq.com")
    assert isinstance(adapter, KeptAlive) and adapter._most == POOL_SIZE
    assert adapter._other._pool_maxsize == POOL_SIZE and adapter._other.max_retries.total == 0
    assert client.session.trust_env is False


# -- real sockets on 127.0.0.1 -----------------------------------------------------------------

@pytest.fixture
def raw_server() -> Iterator[tuple[int, list[bytes]]]:
    """A one-connection-at-a-time TCP server answering queued raw bytes (b"": stay silent,
    b"RST": reset the connection)."""
    listener = socket.create_server(("127.0.0.1", 0))
    answers: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                answer = answers.pop(0) if answers else b""
                if answer == b"RST":   # abortive close: the client sees a reset
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                elif answer:
                    conn.sendall(answer)
                else:
                    stop.wait(2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], answers
    stop.set()
    listener.close()
    thread.join(3)


@pytest.mark.parametrize("own", [True, False], ids=["own transport", "requests' adapter"])
def test_real_socket_truncated_body_reset_and_silence(raw_server, caplog, own):
    port, answers = raw_server
    caplog.set_level(logging.DEBUG)
    client = WeChatClient(f"http://127.0.0.1:{port}", session=None if own else requests.Session(),
                          timeout=(1, 0.3))
    answers.append(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 200\r\n\r\n{\"errcode\":0,")
    with pytest.raises(Retryable):
        client.send(access_token=TOKEN, touser="o", payload={})
    answers.append(b"RST")
    with pytest.raises(Retryable, match="connection failed"):
        client.send(access_token=TOKEN, touser="o", payload={})
    answers.append(b"")   # accept, never answer: a read timeout
    with pytest.raises(Retryable) as caught:
        client.send(access_token=TOKEN, touser="o", payload={})
    assert "timeout" in caught.value.errmsg
    assert TOKEN not in caplog.text
    assert own or "access_token=***" in caplog.text   # urllib3's lines


@pytest.mark.parametrize("own", [True, False], ids=["own transport", "requests' adapter"])
def test_real_socket_connection_refused(own):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = WeChatClient(f"http://127.0.0.1:{port}", session=None if own else requests.Session(),
                          timeout=(1, 1))
    with pytest.raises(Retryable) as caught:
        client.token(appid="a", secret=TOKEN)   # the secret travels in the query here
    assert TOKEN not in "".join(traceback.format_exception(caught.value))


def test_the_environment_proxy_is_used_unless_no_proxy_names_the_host(monkeypatch):
    """Proxy settings are read once per client, as requests would read them on every call."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    listener = socket.create_server(("127.0.0.1", 0))
    port, request_lines = listener.getsockname()[1], []
    body = b'{"errcode":0}'

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                request_lines.append(conn.recv(65536).split(b"\r\n", 1)[0])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        proxied = WeChatClient("http://wechat.invalid", timeout=(2, 2))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        direct = WeChatClient(f"http://127.0.0.1:{port}", timeout=(2, 2))
        proxied.send(access_token=TOKEN, touser="o", payload={"msgtype": "text"})
        direct.send(access_token=TOKEN, touser="o", payload={"msgtype": "text"})
    finally:
        listener.close()
        thread.join(3)
    assert [line.split(b"?")[0] for line in request_lines] == [
        b"POST http://wechat.invalid/cgi-bin/message/custom/send",   # through the proxy
        b"POST /cgi-bin/message/custom/send"]                        # straight to the host


def test_a_send_goes_to_the_transport_as_json_with_the_session_s_headers(client, transport):
    transport.reply({"errcode": 0})
    client.session.headers["X-Trace"] = "on"
    client.send(access_token=TOKEN, touser="o用户", payload={"msgtype": "text",
                                                            "text": {"content": "营业时间"}})
    request = transport.requests[0][0]
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Length"] == str(len(request.body))
    assert request.headers["X-Trace"] == "on"
    assert json.loads(request.body) == {"msgtype": "text", "text": {"content": "营业时间"},
                                        "touser": "o用户"}
