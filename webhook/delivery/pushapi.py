"""``ctx.wechat`` in the delivery process: the WeChat API bound to one push's app and customer.

Sends are not made here: they are kept and queued in the outbox with the push's replies, in
the one store step that finishes its handling (``Responder.respond``), so a handling tried
again after a crash or a failure queues them again rather than twice. Typing, cloud calls and
media downloads go to WeChat at once, with the app's shared token. Typing is a hint to the
customer: WeChat's refusal (45080 no message in the last 30 s, 45081 already typing, as in a
handling tried again) is logged, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from webhook.cloudquery import Statement
from webhook.errors import WeChatAPIError
from webhook.push.messages import Reply, TransferToHuman, hashed
from webhook.wechat.api import WeChatAPI

__all__ = ["PushAPI"]

log = logging.getLogger(__name__)


class PushAPI:
    """A ``webhook.routing.handlerapi.HandlerAPI`` for the push from ``openid`` to ``appid``;
    ``queued`` holds (openid, reply) in the order sent."""

    def __init__(self, api: WeChatAPI, *, appid: str, openid: str) -> None:
        self._api, self.appid, self.openid = api, appid, openid
        self.queued: list[tuple[str, Reply]] = []

    def send(self, reply: Reply, *, openid: str | None = None) -> None:
        if not isinstance(reply, Reply) or isinstance(reply, TransferToHuman):
            raise TypeError("send() takes a reply to send (TextReply, ImageReply, ...); hand-offs "
                            "are rules: router.transfer()")
        if openid is not None and (not isinstance(openid, str) or not openid):
            raise ValueError("openid is a user's openid")
        self.queued.append((openid or self.openid, reply))

    def typing(self, on: bool = True) -> None:
        command = "Typing" if on else "CancelTyping"
        try:
            self._api.typing(self.appid, self.openid, command)
        except WeChatAPIError as exc:
            log.info("typing refused appid=%s user=%s command=%s errcode=%s", self.appid,
                     hashed(self.openid), command, exc.errcode)

    def call_function(self, name: str, data: Mapping[str, Any] | None = None) -> Any:
        return self._api.cloud.call_function(self.appid, name, data)

    def database(self, statement: Statement) -> Any:
        return self._api.cloud.database(self.appid, statement)

    def download_media(self, media_id: str) -> bytes:
        return self._api.get_media(self.appid, media_id)
