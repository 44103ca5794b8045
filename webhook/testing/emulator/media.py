"""Temporary media (docs/protocol.md §5.3-5.4): multipart upload of images, ids valid 3 days."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webhook.testing.emulator.state import Fail, MediaItem, Raw, Request
from webhook.testing.emulator.tokens import authorize

if TYPE_CHECKING:
    from webhook.testing.emulator.core import Emulator

__all__ = ["MEDIA_TTL", "upload", "get", "find_media", "customer_image"]

MEDIA_TTL = 3 * 86400


def find_media(emu: Emulator, appid: str, media_id: str) -> MediaItem | None:
    """The media item if it belongs to ``appid`` and has not expired."""
    item = emu.media.get(media_id)
    if item is None or item.appid != appid or emu.now() >= item.created_at + MEDIA_TTL:
        return None
    return item


def customer_image(emu: Emulator, appid: str, data: bytes, content_type: str) -> str:
    """An image a customer sent: WeChat keeps it as temporary media of the app, and the push
    names it by MediaId."""
    emu.app_state(appid)
    media_id = emu.new_id(64)
    emu.media[media_id] = MediaItem(appid=appid, data=data, content_type=content_type,
                                    filename="customer.jpg", created_at=emu.now())
    return media_id


def upload(emu: Emulator, req: Request) -> dict[str, Any]:
    """POST /cgi-bin/media/upload?type=image, multipart field ``media``"""
    app = authorize(emu, req)
    if req.params.get("type") != "image":     # mini programs may only upload images
        raise Fail(40004)
    part = req.parts.get("media")
    if part is None or not part.data:
        raise Fail(41005)
    now = emu.now()
    media_id = emu.new_id(64)
    emu.media[media_id] = MediaItem(appid=app.appid, data=part.data,
                                    content_type=part.content_type or "image/jpeg",
                                    filename=part.filename or "media", created_at=now)
    return {"errcode": 0, "errmsg": "ok", "type": "image", "media_id": media_id,
            "created_at": int(now)}


def get(emu: Emulator, req: Request) -> Raw:
    """GET /cgi-bin/media/get?media_id= -> the raw bytes, or JSON 40007"""
    app = authorize(emu, req)
    media_id = req.params.get("media_id", "")
    item = find_media(emu, app.appid, media_id)
    if item is None:
        raise Fail(40007)
    return Raw(item.data, item.content_type,
               headers=(("Content-Disposition", f'attachment; filename="{media_id}.jpg"'),))
