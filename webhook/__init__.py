"""wxpush: a self-hosted WeChat customer-service webhook.

What a bot's own handlers need, in one place::

    from webhook import Router, TEXT, regex, Context, TextMessage, TextReply

    router = Router(name="orders")

    @router.message(TEXT & regex(r"^订单\\s*(?P<order>\\d{6,})$"))
    def order_status(message: TextMessage, ctx: Context) -> TextReply:
        return TextReply(f"订单 {ctx.match['order']} 正在处理中。")

``ctx.wechat`` (a ``HandlerAPI``) is the app's WeChat API: more sends, typing, cloud
functions and database statements (``webhook.cloudquery``), the customer's images. The
server itself (``webhook.server.app``), its stores, the WeChat client and the testing tools
(``webhook.testing``) are imported from their own packages. Everything here is pure:
importing it loads no web framework, HTTP client or store.
"""

from webhook.errors import (CloudNotFound, ConfigError, FunctionFailed, FunctionTimedOut,
                            WeChatAPIError, WxpushError)
from webhook.push.messages import (EnterSessionEvent, Event, ImageMessage, ImageReply, LinkReply,
                                   Message, MiniProgramPageMessage, MiniProgramPageReply, Reply,
                                   TextMessage, TextReply, TransferToHuman, UnknownMessage)
from webhook.routing.matchers import (ANY, ENTER_SESSION, EVENT, IMAGE, MESSAGE, MINIPROGRAM_PAGE,
                                      TEXT, Matcher, app, event, exact, keyword, msgtype, prefix,
                                      regex, session_from)
from webhook.routing.handlerapi import HandlerAPI
from webhook.routing.router import Context, Handler, Router

__all__ = [
    # routing
    "Router", "Context", "Handler", "Matcher", "HandlerAPI",
    "TEXT", "IMAGE", "MINIPROGRAM_PAGE", "EVENT", "ENTER_SESSION", "MESSAGE", "ANY",
    "msgtype", "event", "keyword", "exact", "prefix", "regex", "session_from", "app",
    # what a customer sends
    "Message", "TextMessage", "ImageMessage", "MiniProgramPageMessage", "Event",
    "EnterSessionEvent", "UnknownMessage",
    # what a handler answers
    "Reply", "TextReply", "ImageReply", "LinkReply", "MiniProgramPageReply", "TransferToHuman",
    # errors (a cloud call through ctx.wechat raises WeChatAPIError and its kinds)
    "WxpushError", "ConfigError", "WeChatAPIError", "FunctionFailed", "FunctionTimedOut",
    "CloudNotFound",
]
