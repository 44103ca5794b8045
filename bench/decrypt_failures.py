"""What ``Cipher.open`` costs for each way a ciphertext can fail, beside one that opens.

    python bench/decrypt_failures.py [--seconds 2]

Every failure raises the same DecryptError after the same checks (webhook/push/crypto.py), so
the figures for bad padding, a message length that does not fit and another AppID should
differ by no more than the noise; the spread printed is the largest median over the
smallest among the failures. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from Crypto.Cipher import AES  # noqa: E402

from webhook.errors import DecryptError  # noqa: E402
from webhook.push.crypto import Cipher, aes_key  # noqa: E402

APPID = "wx2c2769f8efd9abc2"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
MESSAGE = ('{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY",'
           '"CreateTime":1714112445,"MsgType":"text","Content":"你好","MsgId":1}').encode()
BATCH = 200


def sealed(plain: bytes) -> bytes:
    key = aes_key(KEY)
    return AES.new(key, AES.MODE_CBC, iv=key[:16]).encrypt(plain)


def cases() -> dict[str, bytes]:
    full = bytes(16) + len(MESSAGE).to_bytes(4, "big") + MESSAGE + APPID.encode()
    fill = -len(full) % 32 or 32
    pad = bytes((fill,)) * fill
    return {
        "opens": sealed(full + pad),
        "bad padding": sealed(full + bytes(fill)),
        "length does not fit": sealed(full[:16] + (len(MESSAGE) + 1).to_bytes(4, "big")
                                      + full[20:] + pad),
        "another appid": sealed(full[:-len(APPID)] + APPID.upper().encode() + pad),
    }


def per_call(cipher: Cipher, data: bytes) -> float:
    started = time.perf_counter()
    for _ in range(BATCH):
        try:
            cipher.open(data)
        except DecryptError:
            pass
    return (time.perf_counter() - started) / BATCH * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    cipher = Cipher(KEY, APPID)
    samples: dict[str, list[float]] = {name: [] for name in cases()}
    deadline = time.monotonic() + args.seconds
    gc.disable()
    while time.monotonic() < deadline:   # interleaved, so drift touches every case alike
        for name, data in cases().items():
            samples[name].append(per_call(cipher, data))
    gc.enable()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    size = len(cases()["opens"])
    print(f"Cipher.open of a {size}-byte ciphertext (median of batches of {BATCH})")
    for name, value in medians.items():
        print(f"  {name:22} {value:6.2f} us")
    failures = [value for name, value in medians.items() if name != "opens"]
    print(f"  failures: slowest / fastest = {max(failures) / min(failures):.3f}")


if __name__ == "__main__":
    main()
