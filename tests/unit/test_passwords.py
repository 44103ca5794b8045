"""Operator passwords: scrypt hashes carrying their parameters, checked in constant time."""

import pytest

from webhook.passwords import Scrypt, hash_password, parse_hash, verify_password

CHEAP = Scrypt(n=1 << 10, r=8, p=1)   # the format is the subject here, not the cost


def test_a_hash_verifies_its_password_only():
    stored = hash_password("correct horse", cost=CHEAP)
    assert stored.startswith("scrypt$1024$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert not verify_password("", stored)
    assert hash_password("correct horse", cost=CHEAP) != stored   # a fresh salt each time


def test_the_default_cost_is_what_the_hash_says():
    cost, salt, key = parse_hash(hash_password("密码很长很长", salt=b"s" * 16))
    assert (cost, salt, len(key)) == (Scrypt(1 << 15, 8, 1), b"s" * 16, 32)


@pytest.mark.parametrize("text", [
    "", "plain", "argon2$...", "scrypt$1000$8$1$c2FsdA==$a2V5",          # n not a power of two
    "scrypt$2097152$8$1$c2FsdA==$a2V5",                                  # n over the cap
    "scrypt$1024$64$1$c2FsdA==$a2V5", "scrypt$1024$8$0$c2FsdA==$a2V5",
    "scrypt$1024$8$1$c2FsdA=$a2V5", "scrypt$1024$8$1$$a2V5",
])
def test_anything_else_is_no_hash_and_verifies_nothing(text):
    assert parse_hash(text) is None
    assert not verify_password("anything", text)


def test_no_operator_is_refused_after_the_same_work():
    assert not verify_password("guess", None)
