"""wxpush: a self-hosted WeChat customer-service webhook.

The public surface, loaded on first use so that importing a pure module (``webhook.crypto``,
``webhook.routing``) does not pull in Falcon, requests or a store::

    from webhook import Router, TEXT, keyword, TextReply, create_app
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "webhook.app", "get_app": "webhook.app",
    "Settings": "webhook.settings", "AppConfig": "webhook.settings",
    "ServerConfig": "webhook.settings", "load_settings": "webhook.settings:load",
    "Router": "webhook.routing", "Route": "webhook.routing", "Context": "webhook.routing",
    "TEXT": "webhook.routing", "IMAGE": "webhook.routing", "MINIPROGRAM_PAGE": "webhook.routing",
    "EVENT": "webhook.routing", "ENTER_SESSION": "webhook.routing", "MESSAGE": "webhook.routing",
    "ANY": "webhook.routing", "msgtype": "webhook.routing", "event": "webhook.routing",
    "keyword": "webhook.routing", "exact": "webhook.routing", "prefix": "webhook.routing",
    "regex": "webhook.routing", "session_from": "webhook.routing", "app": "webhook.routing",
    "Message": "webhook.messages", "TextMessage": "webhook.messages",
    "ImageMessage": "webhook.messages", "MiniProgramPageMessage": "webhook.messages",
    "Event": "webhook.messages", "EnterSessionEvent": "webhook.messages",
    "UnknownMessage": "webhook.messages", "Reply": "webhook.messages",
    "TextReply": "webhook.messages", "ImageReply": "webhook.messages",
    "LinkReply": "webhook.messages", "MiniProgramPageReply": "webhook.messages",
    "TransferToHuman": "webhook.messages",
    "WxpushError": "webhook.errors", "RequestRejected": "webhook.errors",
    "WeChatAPIError": "webhook.errors", "ConfigError": "webhook.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'webhook' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
