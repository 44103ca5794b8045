"""signature.py: official vectors (docs/protocol.md §8), tamper resistance, the timestamp
window."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from webhook.errors import BadSignature, MalformedRequest, StaleTimestamp
from webhook.push.signature import check_timestamp, signature, verify

V1_ENCRYPT = (
    "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQq"
    "cvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuM"
    "cp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3"
    "VIYnSeOBrebufAlr7F9mFUPAJGj04=")

# (expected, parts) from docs/protocol.md §1, §2.1, §2.3, §2.5, §2.6, §8
VECTORS = [
    ("f464b24fc39322e44b38aa78f5edd27bd1441696", ("AAAAA", "1714036504", "1514711492")),  # V0
    ("899cf89e464efb63f54ddac96b0a0a235f53aa78", ("AAAAA", "1714037059", "486452656")),  # V0'
    ("6c5c811b55cc85e0e1b54100749188c20beb3f5d", ("AAAAA", "1714112445", "415670741")),  # V1 URL
    ("046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
     ("AAAAA", "1714112445", "415670741", V1_ENCRYPT)),  # V1 msg_signature
    ("1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1",
     ("AAAAA", "1713424427", "415670741",
      "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==")),
]


@pytest.mark.parametrize(("expected", "parts"), VECTORS)
def test_official_vectors(expected: str, parts: tuple[str, ...]) -> None:
    assert signature(*parts) == expected
    verify(expected, *parts)


@pytest.mark.parametrize(("expected", "parts"), VECTORS)
def test_order_of_parts_does_not_matter(expected: str, parts: tuple[str, ...]) -> None:
    assert signature(*reversed(parts)) == expected


def test_v0_sorted_concatenation() -> None:
    # docs/protocol.md §1: sorted ["1514711492","1714036504","AAAAA"] joined with no separator
    import hashlib
    assert signature("AAAAA", "1714036504", "1514711492") == hashlib.sha1(
        b"15147114921714036504AAAAA").hexdigest()


def _mutate(text: str, index: int, char: str) -> str:
    index %= len(text)
    replacement = char if char != text[index] else ("b" if text[index] != "b" else "c")
    return text[:index] + replacement + text[index + 1:]


@given(which=st.integers(0, 4), index=st.integers(0, 10_000),
       char=st.characters(codec="utf-8", exclude_categories=("Cs",)))
def test_any_one_character_change_is_rejected(which: int, index: int, char: str) -> None:
    expected, parts = VECTORS[3]
    values = [expected, *parts]  # signature, token, timestamp, nonce, Encrypt
    values[which] = _mutate(values[which], index, char)
    with pytest.raises(BadSignature):
        verify(values[0], *values[1:])


@pytest.mark.parametrize("given_sig", [
    "", "F464B24FC39322E44B38AA78F5EDD27BD1441696", "f464b24fc39322e44b38aa78f5edd27bd144169",
    "f464b24fc39322e44b38aa78f5edd27bd1441696 ", "f464b24fc39322e44b38aa78f5edd27bd144169é"])
def test_near_misses_are_rejected(given_sig: str) -> None:
    with pytest.raises(BadSignature) as info:
        verify(given_sig, "AAAAA", "1714036504", "1514711492")
    assert info.value.status == 403


@pytest.mark.parametrize("parts", [("AAAAA", "1714112445", "\ud800"),
                                   ("AAAAA", "1714112445", "415670741", "\udfffEncrypt")])
def test_half_a_surrogate_pair_is_malformed_not_hashed(parts: tuple[str, ...]) -> None:
    """UTF-8 cannot carry it: hashing it raised UnicodeEncodeError (a 500 at the edge)."""
    with pytest.raises(MalformedRequest, match="not valid Unicode"):
        verify("0" * 40, *parts)


def test_timestamp_inside_the_window() -> None:
    assert check_timestamp("1714036504", now=1714036504.0, tolerance=300) == 1714036504
    assert check_timestamp("1714036204", now=1714036504.0, tolerance=300) == 1714036204
    assert check_timestamp("1714036804", now=1714036504.0, tolerance=300) == 1714036804


@pytest.mark.parametrize("timestamp", ["1714036203", "1714036805", "0"])
def test_timestamp_outside_the_window(timestamp: str) -> None:
    with pytest.raises(StaleTimestamp) as info:
        check_timestamp(timestamp, now=1714036504.0, tolerance=300)
    assert info.value.status == 403


def test_tolerance_zero_turns_the_window_off() -> None:
    assert check_timestamp("0", now=1714036504.0, tolerance=0) == 0


@pytest.mark.parametrize("timestamp", ["", " 1714036504", "+1714036504", "-5", "1_714_036_504",
                                       "17140365.04", "１７１４０３６５０４", "1" * 40, "0x10"])
def test_timestamp_must_be_decimal(timestamp: str) -> None:
    with pytest.raises(MalformedRequest) as info:
        check_timestamp(timestamp, now=1714036504.0, tolerance=300)
    assert info.value.status == 400
