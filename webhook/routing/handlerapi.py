"""What a handler may ask of its app's WeChat API besides its answer: ``ctx.wechat``.

A Protocol, so that handlers stay pure: the delivery process gives each push an object bound
to the push's app and customer (``webhook.delivery.pushapi.PushAPI``), tests give
``webhook.testing.FakeWeChat``, and a handler run with neither gets ``OFFLINE``, which
refuses every call. Handlers never hold the HTTP client, the access_token or the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from webhook.cloudquery import Statement
from webhook.push.messages import Reply

__all__ = ["HandlerAPI", "OFFLINE"]


class HandlerAPI(Protocol):
    """The app's WeChat API, bound to one push (its app and customer)."""

    def send(self, reply: Reply, *, openid: str | None = None) -> None:
        """Queue ``reply`` to the customer (or to ``openid``, another user of the same app)
        through the durable outbox, before the replies the handlers return. It is queued
        with them in one step once the handlers are done, so a handling tried again never
        sends it twice."""

    def typing(self, on: bool = True) -> None:
        """Show (or stop showing) "typing…" to the customer now (docs/protocol.md §4.3: only
        within 30 s of the customer's message); a reply sent stops it too. A hint: WeChat's
        refusal is logged, not raised."""

    def call_function(self, name: str, data: Mapping[str, Any] | None = None) -> Any:
        """Run the app's cloud function ``name`` with ``data`` as its event; its result,
        parsed. FunctionTimedOut after WeChat's 5 s, FunctionFailed, CloudNotFound."""

    def database(self, statement: Statement) -> Any:
        """Run a ``webhook.cloudquery`` statement in the app's cloud database: the records
        (``get()``), a count (``count()``, ``remove()``), the new ``_id``s (``add()``) or
        matched and modified (``update()``)."""

    def download_media(self, media_id: str) -> bytes:
        """The bytes of the customer's image (``ImageMessage.media_id``), kept by WeChat for
        3 days."""


class _Offline:
    """No WeChat API here: every call says so (a RuntimeError, a handler's failure)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no WeChat API in this context: handlers get one from the delivery "
                           "process, or from webhook.testing.FakeWeChat in tests")

    send = typing = call_function = database = download_media = _refuse


OFFLINE: HandlerAPI = _Offline()
