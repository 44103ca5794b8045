"""App-bound WeChat calls: the client plus the shared token, and local images uploaded once.

A reply may name a local image (``ImageReply(path=...)``, a card's ``thumb_path``); it is
uploaded as temporary media the first time and its media_id reused, from the store, for the
media id's 3-day life minus a margin (keyed by appid and the file's sha256, so an edited file
is uploaded again).
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

from webhook.errors import Permanent
from webhook.store.base import Store
from webhook.wechat.client import WeChatClient
from webhook.wechat.cloud import Cloud
from webhook.wechat.tokens import TokenProvider

__all__ = ["WeChatAPI", "MEDIA_TTL"]

log = logging.getLogger(__name__)

MEDIA_TTL = 3 * 86400 - 3 * 3600   # temporary media live 3 days (docs/protocol.md §5.3)
INVALID_MEDIA_ID = 40007
# payload section -> (local file field, media id field)
_LOCAL_MEDIA = {"image": ("path", "media_id"), "miniprogrampage": ("thumb_path", "thumb_media_id")}


class WeChatAPI:
    """WeChat calls on behalf of the configured apps (by appid), each with its shared token;
    ``cloud``: their cloud development (functions, database, storage)."""

    def __init__(self, client: WeChatClient, tokens: TokenProvider, store: Store) -> None:
        self.client, self.tokens, self.store = client, tokens, store
        self.cloud = Cloud(client, tokens)

    def send(self, appid: str, openid: str, payload: dict[str, Any]) -> None:
        """custom/send one ``Reply.payload()``; local images are uploaded (once) first."""
        body, uploads = self._resolve_media(appid, payload)
        try:
            self.tokens.call(appid, lambda token: self.client.send(
                access_token=token, touser=openid, payload=body))
        except Permanent as exc:
            if exc.errcode != INVALID_MEDIA_ID or not uploads:
                raise
            # A cached media_id WeChat no longer knows (expired early): upload again, once.
            log.warning("cached media_id refused appid=%s; uploading again", appid)
            for key in uploads:
                self.store.delete(key)
            body, _ = self._resolve_media(appid, payload)
            self.tokens.call(appid, lambda token: self.client.send(
                access_token=token, touser=openid, payload=body))

    def typing(self, appid: str, openid: str, command: str = "Typing") -> None:
        self.tokens.call(appid, lambda token: self.client.typing(
            access_token=token, touser=openid, command=command))

    def upload_image_data(self, appid: str, filename: str, data: bytes) -> str:
        """The media_id of an image given as bytes (an operator's upload), uploaded now."""
        return self.tokens.call(appid, lambda token: self.client.upload_media(
            access_token=token, filename=filename, data=data))

    def get_media(self, appid: str, media_id: str) -> bytes:
        """A temporary media file's bytes, such as the image a customer sent."""
        return self.tokens.call(appid, lambda token: self.client.get_media(
            access_token=token, media_id=media_id))

    def code2session(self, appid: str, js_code: str) -> dict[str, Any]:
        app = self.tokens.app(appid)
        return self.client.code2session(appid=appid, secret=app.secret, js_code=js_code)

    def get_open_data(self, appid: str, cloudid_list: list[str],
                      openid: str | None = None) -> list[dict[str, Any]]:
        return self.tokens.call(appid, lambda token: self.client.get_open_data(
            access_token=token, cloudid_list=cloudid_list, openid=openid))

    def get_phone_number(self, appid: str, code: str, openid: str | None = None) -> dict[str, Any]:
        return self.tokens.call(appid, lambda token: self.client.get_phone_number(
            access_token=token, code=code, openid=openid))

    # -- local media ----------------------------------------------------------------------
    def _resolve_media(self, appid: str,
                       payload: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """``payload`` with local files replaced by media ids, and the cache keys used."""
        body, keys = dict(payload), []
        for section, (path_field, id_field) in _LOCAL_MEDIA.items():
            part = payload.get(section)
            if isinstance(part, dict) and part.get(path_field):
                media_id, key = self._upload(appid, part[path_field])
                resolved = {k: v for k, v in part.items() if k != path_field}
                resolved[id_field] = media_id
                body[section] = resolved
                keys.append(key)
        return body, keys

    def _upload(self, appid: str, path: str) -> tuple[str, str]:
        with open(path, "rb") as file:   # an unreadable file raises OSError: the sender retries
            data = file.read()
        key = f"media:{appid}:{hashlib.sha256(data).hexdigest()}"
        media_id = self.store.get(key)
        if media_id is None:
            media_id = self.tokens.call(appid, lambda token: self.client.upload_media(
                access_token=token, filename=os.path.basename(path), data=data))
            self.store.put(key, media_id, ttl=MEDIA_TTL)
            log.info("image uploaded appid=%s file=%s", appid, os.path.basename(path))
        return media_id, key
