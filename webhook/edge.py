"""What every HTTP endpoint reads the same way: its body, from gunicorn's input, and its query,
as single values. Used by the push endpoint and the mini program's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import falcon

from webhook.errors import MalformedRequest, PayloadTooLarge
from webhook.logsafe import shown

__all__ = ["query", "read_body"]


def query(req: falcon.Request) -> Mapping[str, str]:
    """The query string as single values (falcon's own dict, read only); a repeated parameter
    is malformed. Falcon decodes invalid UTF-8 in a value to U+FFFD: values are always valid
    Unicode, and one sent that way fails its signature like any other altered value."""
    params = req.params
    for key, value in params.items():
        if type(value) is not str:  # noqa: E721
            raise MalformedRequest(f"query parameter {shown(key, 24)} repeated")
    return cast(Mapping[str, str], params)


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The body, refusing anything over ``limit`` bytes without reading it when declared.

    Read from the server's input itself: gunicorn's ends where the body ends, whether its
    length is declared or it comes chunked. (falcon's ``bounded_stream`` reads a chunked body
    as empty, and costs a request more than the read.)
    """
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    body = req.stream.read(limit + 1 if length is None else length)
    if len(body) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    return body
