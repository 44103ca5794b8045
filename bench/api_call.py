"""The client CPU of one JSON call to WeChat's API, by the client's own transport and by
requests' own, directly and through ``Session.request``.

    python bench/api_call.py [--calls 2000] [--rounds 3]

A reply's send is a JSON POST. ``WeChatClient`` hands such a call to the session's transport
as it prepared it (``_plain``); any other call goes through ``requests.Session.request``. Its
own session's transport is ``webhook.wechat.transport.KeptAlive`` (its own sockets); a session
made by hand has requests' ``HTTPAdapter`` (urllib3). The three are timed here in one run,
alternating, against a keep-alive stand-in server in another process (so its CPU is not
counted), as the CPU this process spends per call. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

from webhook.wechat.client import WeChatClient  # noqa: E402

SERVER = r"""
import http.server, sys
class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # or Nagle and delayed ACKs cap a keep-alive client
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"errcode":0,"errmsg":"ok"}'
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
print(server.server_address[1], flush=True)
server.serve_forever()
"""
PAYLOAD = {"touser": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "msgtype": "text",
           "text": {"content": "订单 20261121：已发货，预计 明天 送达。"}}
PATH = "/cgi-bin/message/custom/send"


def cpu_per_call(call, calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        client = WeChatClient(f"http://127.0.0.1:{port}")
        urllib3 = requests.Session()
        urllib3.mount("http://", HTTPAdapter(max_retries=0))
        by_hand = WeChatClient(f"http://127.0.0.1:{port}", session=urllib3)
        body = json.dumps(PAYLOAD, allow_nan=False).encode()
        paths = {
            "own transport": lambda: client._call("POST", PATH, token="T", json=PAYLOAD),
            "HTTPAdapter": lambda: by_hand._call("POST", PATH, token="T", json=PAYLOAD),
            "Session.request": lambda: by_hand._call(
                "POST", PATH, token="T", data=body, headers={"Content-Type": "application/json"}),
        }
        for call in paths.values():
            cpu_per_call(call, 200)   # warm the connection and the code
        samples: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, call in paths.items():
                samples[name].append(cpu_per_call(call, args.calls))
    finally:
        server.kill()
        server.wait()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"client CPU per JSON call to a keep-alive stand-in on 127.0.0.1 "
          f"(median of {args.rounds} rounds of {args.calls})")
    for name, value in medians.items():
        print(f"  {name:<16} {value:7.1f} us")
    print(f"  HTTPAdapter / own transport: "
          f"{medians['HTTPAdapter'] / medians['own transport']:.2f}x; "
          f"Session.request / HTTPAdapter: "
          f"{medians['Session.request'] / medians['HTTPAdapter']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
