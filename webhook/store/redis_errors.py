"""How the Redis store's calls fail: redis-py's errors become StoreError."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import redis

from webhook.errors import StoreError

__all__ = ["store_errors"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def store_errors(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Turn redis-py errors into StoreError (the message names no password)."""
    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreError(f"redis store: {type(exc).__name__}: {exc}") from exc
    return wrapper
