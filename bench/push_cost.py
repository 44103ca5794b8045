"""What one push costs before it is recorded: verify + decrypt + parse of a safe-mode text push.

    python bench/push_cost.py [--seconds 3]

Prints the median per push of ``receive.open_push`` for XML and JSON (targets: <= 30 us XML,
<= 12 us JSON) and, in the same run, wechatpy's check_signature + WeChatCrypto.decrypt_message
+ parse_message of the same XML push, and the ratio. wechatpy is a bench-only dependency: if it
is not importable the comparison is skipped with a note. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from webhook.config.settings import AppConfig  # noqa: E402
from webhook.push.crypto import KeyRing  # noqa: E402
from webhook.push.parsing import parse_body, render  # noqa: E402
from webhook.push.receive import open_push  # noqa: E402
from webhook.push.signature import signature  # noqa: E402

APPID, TOKEN = "wx2c2769f8efd9abc2", "spamtest"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TIMESTAMP, NONCE = "1714112445", "415670741"
MESSAGE = {"ToUserName": "gh_97417a04a28d", "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
           "CreateTime": 1714112445, "MsgType": "text", "Content": "你好，请问我的订单什么时候发货？",
           "MsgId": 6054768590064713728}
TARGETS_US = {"xml": 30.0, "json": 12.0}
BATCH = 100  # calls per timed batch: long enough for the clock, short enough to sample often


def safe_push(fmt: str, ring: KeyRing) -> tuple[dict[str, str], bytes]:
    """A safe-mode push exactly as WeChat sends it (docs/protocol.md §2.1, §2.2)."""
    encrypt = ring.current.encrypt(render(MESSAGE, fmt).encode(), random16=b"0123456789abcdef")
    query = {"signature": signature(TOKEN, TIMESTAMP, NONCE), "timestamp": TIMESTAMP,
             "nonce": NONCE, "openid": MESSAGE["FromUserName"], "encrypt_type": "aes",
             "msg_signature": signature(TOKEN, TIMESTAMP, NONCE, encrypt)}
    return query, render({"ToUserName": MESSAGE["ToUserName"], "Encrypt": encrypt}, fmt).encode()


def ours(fmt: str) -> Callable[[], Any]:
    app = AppConfig(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY, format=fmt, mode="safe")
    ring = KeyRing(APPID, AES_KEY)
    query, body = safe_push(fmt, ring)
    now = float(TIMESTAMP)

    def run() -> Any:
        return open_push(app, ring, query, body, now=now, tolerance=300).message

    if run().content != MESSAGE["Content"]:
        raise SystemExit(f"wxpush {fmt}: the push did not open to the expected message")
    return run


def xml_parse_share() -> Callable[[], Any]:
    """parse_body of the decrypted XML message alone: the parser's share of the XML figure."""
    message = render(MESSAGE, "xml").encode()
    return lambda: parse_body(message, "xml")


def wechatpy_xml() -> Callable[[], Any] | None:
    """wechatpy doing the same work on the same XML push, or None if it is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from wechatpy import parse_message
            from wechatpy.crypto import WeChatCrypto
            from wechatpy.utils import check_signature
    except ImportError:
        return None
    query, body = safe_push("xml", KeyRing(APPID, AES_KEY))
    crypto = WeChatCrypto(TOKEN, AES_KEY, APPID)
    text = body.decode()

    def run() -> Any:
        check_signature(TOKEN, query["signature"], query["timestamp"], query["nonce"])
        xml = crypto.decrypt_message(text, query["msg_signature"], query["timestamp"],
                                     query["nonce"])
        return parse_message(xml)

    if run().content != MESSAGE["Content"]:
        raise SystemExit("wechatpy: the push did not open to the expected message")
    return run


def medians(candidates: dict[str, Callable[[], Any]], seconds: float) -> dict[str, float]:
    """Median microseconds per call; batches interleaved so load from elsewhere hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for run in candidates.values():  # warm up caches and thread-local state
        for _ in range(BATCH):
            run()
    deadline = time.perf_counter() + seconds
    gc.disable()
    try:
        while time.perf_counter() < deadline:
            for name, run in candidates.items():
                started = time.perf_counter_ns()
                for _ in range(BATCH):
                    run()
                samples[name].append((time.perf_counter_ns() - started) / BATCH / 1000)
    finally:
        gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time (default 3)")
    args = parser.parse_args()
    candidates = {"xml": ours("xml"), "json": ours("json"), "xml parse": xml_parse_share()}
    theirs = wechatpy_xml()
    if theirs is not None:
        candidates["wechatpy xml"] = theirs
    result = medians(candidates, args.seconds)
    print(f"verify + decrypt + parse of one safe-mode text push (median of batches of {BATCH})")
    for fmt, target in TARGETS_US.items():
        verdict = "ok" if result[fmt] <= target else "OVER TARGET"
        print(f"  wxpush   {fmt:<5} {result[fmt]:7.1f} us   target <= {target:.0f} us  {verdict}")
    print(f"    of which parse_body of the XML message (one expat pass): "
          f"{result['xml parse']:.1f} us")
    if theirs is None:
        print("  wechatpy: not importable (pip install wechatpy); comparison skipped")
    else:
        print(f"  wechatpy xml   {result['wechatpy xml']:7.1f} us   "
              "(check_signature + WeChatCrypto.decrypt_message + parse_message)")
        print(f"  ratio wechatpy / wxpush (xml): {result['wechatpy xml'] / result['xml']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
