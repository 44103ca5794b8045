"""Message factories for handler tests: typed messages as parsing would give them, in one line.

    msg = make_text("几点开门")
    route, replies = dispatch(router, msg)
    assert replies == [TextReply("...")]

Every factory takes field overrides (``openid=``, ``create_time=``, ``msg_id=`` ...).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from webhook.push.messages import (ENTER_SESSION_EVENT, EnterSessionEvent, Event, ImageMessage,
                                   Message, MiniProgramPageMessage, Reply, TextMessage,
                                   UnknownMessage)
from webhook.routing.handlerapi import OFFLINE, HandlerAPI
from webhook.routing.router import Route, Router

__all__ = ["APPID", "OPENID", "ORIGINAL_ID", "CREATE_TIME", "make_text", "make_image",
           "make_miniprogrampage", "make_event", "make_enter_session", "make_unknown", "dispatch"]

APPID = "wx0123456789abcdef"
OPENID = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
ORIGINAL_ID = "gh_0123456789ab"
CREATE_TIME = 1_700_000_000
_msg_ids = itertools.count(7_000_000_000_000_000_001)  # 64-bit like WeChat's, unique per call


def _common(overrides: dict[str, Any], *, msg_id: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"to_user": ORIGINAL_ID, "from_user": overrides.pop("openid", OPENID),
                              "create_time": CREATE_TIME}
    if msg_id:
        fields["msg_id"] = next(_msg_ids)
    fields.update(overrides)
    return fields


def make_text(content: str = "hi", **overrides: Any) -> TextMessage:
    return TextMessage(content=content, **_common(overrides, msg_id=True))


def make_image(media_id: str = "media_id_1", **overrides: Any) -> ImageMessage:
    overrides.setdefault("pic_url", "https://mmbiz.qpic.cn/test.jpg")
    return ImageMessage(media_id=media_id, **_common(overrides, msg_id=True))


def make_miniprogrampage(title: str = "商品", page_path: str = "pages/index/index",
                         **overrides: Any) -> MiniProgramPageMessage:
    overrides.setdefault("app_id", APPID)
    return MiniProgramPageMessage(title=title, page_path=page_path,
                                  **_common(overrides, msg_id=True))


def make_event(name: str, **overrides: Any) -> Event:
    """An event push; ``user_enter_tempsession`` gives an EnterSessionEvent, as parsing does."""
    if name == ENTER_SESSION_EVENT:
        return make_enter_session(**overrides)
    return Event(event=name, **_common(overrides, msg_id=False))


def make_enter_session(session_from: str = "", **overrides: Any) -> EnterSessionEvent:
    return EnterSessionEvent(session_from=session_from, **_common(overrides, msg_id=False))


def make_unknown(msg_type: str = "voice", **overrides: Any) -> UnknownMessage:
    """A MsgType we do not model (still acknowledged; reaches only rules that ask for it)."""
    return UnknownMessage(msg_type=msg_type, **_common(overrides, msg_id=True))


def dispatch(router: Router, message: Message, *, appid: str = APPID,
             clock: Callable[[], float] = time.time, budget: float = 3.0,
             logger: logging.Logger | None = None,
             wechat: HandlerAPI = OFFLINE) -> tuple[Route, list[Reply]]:
    """What the server does with ``message``: the route (``route.transfer``, ``route.names``)
    and the replies the handlers produce; nothing is sent. ``wechat``: the handlers'
    ``ctx.wechat``, e.g. a ``FakeWeChat`` that records what they asked of it."""
    route = router.route(message, appid=appid)
    replies = route.run(message, appid=appid, clock=clock, budget=budget,
                        logger=logger or logging.getLogger("webhook.testing"),
                        rescue=lambda: router.rescue(message, appid=appid), wechat=wechat)
    return route, replies
