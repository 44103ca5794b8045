"""crypto.py: official vectors (docs/protocol.md §2.6, §8), round trips, padding, tampering,
rotation."""

from __future__ import annotations

import base64
import threading

import pytest
from Crypto.Cipher import AES
from hypothesis import given, strategies as st
from vectors import (V1_APPID, V1_ENCRYPT, V1_MESSAGE, V1_REPLY, V3_APPID, V3_ENCRYPT, V3_KEY,
                     V3_MESSAGE, XML_APPID, XML_REPLY, ZERO_KEY)

from webhook.errors import DecryptError, MalformedRequest
from webhook.push.crypto import BLOCK, NOT_OPEN, Cipher, KeyRing, aes_key

OTHER_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


def raw_plaintext(cipher_key: str, encrypt: str) -> bytes:
    """Decrypt without any of the checks, to look at FullStr and its padding."""
    key = aes_key(cipher_key)
    return AES.new(key, AES.MODE_CBC, key[:16]).decrypt(base64.b64decode(encrypt))


def raw_encrypt(cipher_key: str, plain: bytes) -> str:
    key = aes_key(cipher_key)
    return base64.b64encode(AES.new(key, AES.MODE_CBC, key[:16]).encrypt(plain)).decode()


def does_not_open(call, detail: str) -> None:
    """Every failure is the one DecryptError; only its detail (for the log) differs."""
    with pytest.raises(DecryptError) as info:
        call()
    assert type(info.value) is DecryptError
    assert (info.value.status, info.value.reason) == (403, NOT_OPEN)
    assert info.value.detail == detail


# --- keys ----------------------------------------------------------------------------------

def test_all_a_key_is_32_zero_bytes() -> None:
    assert aes_key(ZERO_KEY) == bytes(32)


@pytest.mark.parametrize("key", [V3_KEY, OTHER_KEY])
def test_non_canonical_keys_decode_leniently(key: str) -> None:
    # The 43rd character carries 2 bits that do not fit; here they are not zero, so the key
    # is not the canonical encoding of its bytes (strict decoders refuse it).
    key_bytes = aes_key(key)
    assert len(key_bytes) == 32
    assert base64.b64encode(key_bytes).decode()[:43] != key


@pytest.mark.parametrize("key", ["", "A" * 42, "A" * 44, "A" * 42 + "-", "A" * 42 + "=",
                                 "A" * 42 + "é"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        aes_key(key)


def test_repr_shows_no_key() -> None:
    ring = KeyRing(V3_APPID, V3_KEY, OTHER_KEY)
    for text in (repr(ring), repr(ring.current), repr(ring.previous)):
        assert V3_KEY not in text and OTHER_KEY not in text
        assert V3_APPID in text


# --- official vectors ----------------------------------------------------------------------

def test_v1_decrypts_to_the_167_byte_message() -> None:
    message = Cipher(ZERO_KEY, V1_APPID).decrypt(V1_ENCRYPT)
    assert message == V1_MESSAGE
    assert len(message) == 167


def test_v1_layout_matches_the_worked_example() -> None:
    # docs/protocol.md §2.6: TmpMsg 224 bytes, FullStr 205 bytes + 19 bytes of 0x13 (K = 32)
    plain = raw_plaintext(ZERO_KEY, V1_ENCRYPT)
    assert len(plain) == 224
    assert plain[-19:] == b"\x13" * 19
    assert plain[:16] == b"a8eedb185eb2fecf"
    assert int.from_bytes(plain[16:20], "big") == 167


def test_v1_reply_is_reproduced_byte_for_byte() -> None:
    cipher = Cipher(ZERO_KEY, V1_APPID)
    assert cipher.encrypt(b'{"demo_resp":"good luck"}', random16=b"707722b803182950") == V1_REPLY


def test_xml_reply_vector_is_reproduced_byte_for_byte() -> None:
    # docs/protocol.md §2.5/§2.6: 3rd-party example, the 52-byte reply text (literally without
    # "<!")
    reply = b"<xml><demo_resp>[CDATA[good luck]]</demo_resp></xml>"
    assert len(reply) == 52
    cipher = Cipher(ZERO_KEY, XML_APPID)
    assert cipher.encrypt(reply, random16=b"999951349e8ee746") == XML_REPLY
    assert cipher.decrypt(XML_REPLY) == reply


def test_v3_compatible_mode_decrypts() -> None:
    assert Cipher(V3_KEY, V3_APPID).decrypt(V3_ENCRYPT) == V3_MESSAGE


def test_v3_with_another_appid_is_refused() -> None:
    does_not_open(lambda: Cipher(V3_KEY, "wx0000000000000000").decrypt(V3_ENCRYPT),
                  "another appid")


# --- round trips and padding ---------------------------------------------------------------

def test_every_length_0_to_1000_round_trips() -> None:
    cipher = Cipher(V3_KEY, V3_APPID)
    for length in range(1001):
        message = bytes((i * 7 + length) % 256 for i in range(length))
        encrypt = cipher.encrypt(message, random16=length.to_bytes(16, "big"))
        assert len(base64.b64decode(encrypt)) % BLOCK == 0
        assert cipher.decrypt(encrypt) == message


def test_all_32_padding_values_occur_and_open() -> None:
    cipher = Cipher(ZERO_KEY, V1_APPID)
    seen = set()
    for length in range(BLOCK):
        encrypt = cipher.encrypt(b"m" * length, random16=bytes(16))
        pad = raw_plaintext(ZERO_KEY, encrypt)[-1]
        seen.add(pad)
        assert cipher.decrypt(encrypt) == b"m" * length
    assert seen == set(range(1, BLOCK + 1))


def test_padding_of_a_16_byte_pkcs7_encoder_is_accepted() -> None:
    # Any pad 1..32 is valid (the official decoder takes the last byte); K=16 output included.
    full = b"r" * 16 + (3).to_bytes(4, "big") + b"abc" + V1_APPID.encode()
    pad = 16 - len(full) % 16
    encrypt = raw_encrypt(ZERO_KEY, full + bytes((pad,)) * pad)
    assert Cipher(ZERO_KEY, V1_APPID).decrypt(encrypt) == b"abc"


@given(message=st.binary(max_size=600), random16=st.binary(min_size=16, max_size=16))
def test_round_trip_property(message: bytes, random16: bytes) -> None:
    cipher = Cipher(OTHER_KEY, "wx_any")
    assert cipher.decrypt(cipher.encrypt(message, random16=random16)) == message


def test_unicode_length_counts_bytes() -> None:
    cipher = Cipher(V3_KEY, V3_APPID)
    message = "我是中文abcd123".encode()
    plain = raw_plaintext(V3_KEY, cipher.encrypt(message, random16=bytes(16)))
    assert int.from_bytes(plain[16:20], "big") == len(message) == 19


def test_random16_must_be_16_bytes() -> None:
    with pytest.raises(ValueError):
        Cipher(ZERO_KEY, V1_APPID).encrypt(b"x", random16=b"short")


# --- refusals ------------------------------------------------------------------------------

def _full(msg: bytes, appid: str = V1_APPID, length: int | None = None) -> bytes:
    length = len(msg) if length is None else length
    return b"r" * 16 + length.to_bytes(4, "big") + msg + appid.encode()


@pytest.mark.parametrize("pad_bytes", [
    b"\x00",                      # pad 0
    b"\x21" * 33,                 # pad 33 > K
    b"\xff",                      # pad 255
    b"\x02\x03\x03",              # inconsistent pad bytes
    b"\x05" + b"\x04" * 3,        # pad value 4 but one byte differs
])
def test_bad_padding_is_a_decrypt_error(pad_bytes: bytes) -> None:
    full = _full(b"hello")
    filler = (-(len(full) + len(pad_bytes))) % 16
    plain = full + b"z" * filler + pad_bytes
    does_not_open(lambda: Cipher(ZERO_KEY, V1_APPID).decrypt(raw_encrypt(ZERO_KEY, plain)),
                  "bad padding")


@pytest.mark.parametrize("length", [10_000, 2**32 - 1, len(b"hello") + len(V1_APPID) + 1])
def test_msg_len_past_the_end_is_a_decrypt_error(length: int) -> None:
    full = _full(b"hello", length=length)
    pad = BLOCK - len(full) % BLOCK
    does_not_open(lambda: Cipher(ZERO_KEY, V1_APPID).decrypt(
        raw_encrypt(ZERO_KEY, full + bytes((pad,)) * pad)), "message length does not fit")


@pytest.mark.parametrize("appid, detail", [
    ("", "too short"), ("wxba5fad812f8e6fb", "message length does not fit"),
    ("wxba5fad812f8e6fb9x", "message length does not fit"),
    ("WXBA5FAD812F8E6FB9", "another appid")])
def test_other_receiveid_does_not_open(appid: str, detail: str) -> None:
    encrypt = Cipher(ZERO_KEY, appid).encrypt(b"hello", random16=bytes(16))
    does_not_open(lambda: Cipher(ZERO_KEY, V1_APPID).decrypt(encrypt), detail)


@pytest.mark.parametrize("encrypt", [
    "", "not base64!", "QUFB", "AAAA" * 5, V1_ENCRYPT[:-4], V1_ENCRYPT + "\n", " " + V1_ENCRYPT,
    V1_ENCRYPT.replace("+", "-"), "é" * 44])
def test_garbage_encrypt_is_malformed(encrypt: str) -> None:
    with pytest.raises(MalformedRequest) as info:
        Cipher(ZERO_KEY, V1_APPID).decrypt(encrypt)
    assert info.value.status == 400


def test_16_byte_ciphertext_does_not_open() -> None:
    with pytest.raises(DecryptError):
        Cipher(ZERO_KEY, V1_APPID).decrypt(base64.b64encode(bytes(16)).decode())


def test_wrong_key_does_not_open() -> None:
    with pytest.raises(DecryptError):
        Cipher(OTHER_KEY, V1_APPID).decrypt(V1_ENCRYPT)


@given(index=st.integers(0, len(V1_ENCRYPT) - 2),
       char=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"))
def test_changed_ciphertext_is_refused_or_garbled(index: int, char: str) -> None:
    # AES-CBC alone is malleable: a change is refused or changes the output. (The
    # msg_signature in front of it refuses every change; see test_receive.)
    tampered = V1_ENCRYPT[:index] + char + V1_ENCRYPT[index + 1:]
    if base64.b64decode(tampered) == base64.b64decode(V1_ENCRYPT):
        return  # same bytes (unchanged, or only the unused bits of the last character)
    try:
        message = Cipher(ZERO_KEY, V1_APPID).decrypt(tampered)
    except DecryptError:
        return
    assert message != V1_MESSAGE


# --- key rotation --------------------------------------------------------------------------

def test_current_key_opens_first() -> None:
    ring = KeyRing(V1_APPID, ZERO_KEY, OTHER_KEY)
    message, cipher = ring.decrypt(V1_ENCRYPT)
    assert message == V1_MESSAGE
    assert cipher is ring.current


def test_previous_key_fallback_reports_the_previous_cipher() -> None:
    ring = KeyRing(V1_APPID, OTHER_KEY, ZERO_KEY)
    message, cipher = ring.decrypt(V1_ENCRYPT)
    assert message == V1_MESSAGE
    assert cipher is ring.previous
    # the reply is sealed with the key that opened the push
    reply = cipher.encrypt(b'{"demo_resp":"good luck"}', random16=b"707722b803182950")
    assert reply == V1_REPLY


def test_no_key_opens_it() -> None:
    ring = KeyRing(V1_APPID, OTHER_KEY, V3_KEY)
    with pytest.raises(DecryptError):
        ring.decrypt(V1_ENCRYPT)
    with pytest.raises(DecryptError):
        KeyRing(V1_APPID, OTHER_KEY).decrypt(V1_ENCRYPT)


def test_a_ring_that_does_not_open_it_says_why_for_each_key_in_the_detail_alone() -> None:
    wrong_key = Cipher(OTHER_KEY, V1_APPID)
    with pytest.raises(DecryptError) as info:
        wrong_key.decrypt(V1_ENCRYPT)
    first = info.value.detail
    does_not_open(lambda: KeyRing("wx_other", OTHER_KEY, ZERO_KEY).decrypt(V1_ENCRYPT),
                  f"{first}; previous key: message length does not fit")
    does_not_open(lambda: KeyRing(V1_APPID.upper(), ZERO_KEY, OTHER_KEY).decrypt(V1_ENCRYPT),
                  f"another appid; previous key: {first}")


def test_bad_base64_is_malformed_before_any_key_is_tried() -> None:
    with pytest.raises(MalformedRequest):
        KeyRing(V1_APPID, OTHER_KEY, ZERO_KEY).decrypt("%%%%")


def test_threads_share_a_cipher_safely() -> None:
    cipher = Cipher(V3_KEY, V3_APPID)
    messages = [bytes([n]) * (n * 13 % 400) for n in range(64)]
    encrypts = [cipher.encrypt(m, random16=bytes(16)) for m in messages]
    failures: list[int] = []

    def work() -> None:
        for _ in range(50):
            for n, encrypt in enumerate(encrypts):
                if cipher.decrypt(encrypt) != messages[n]:
                    failures.append(n)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
