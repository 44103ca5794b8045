"""``GET /files/{appid}/{file ID}``: a link to a cloud file that does not expire.

WeChat's download links live hours at most (``batchdownloadfile``'s ``max_age``,
docs/protocol.md §9.4), and a ``cloud://`` file ID opens only inside its own mini program.
This answers a 302 to a fresh download link instead, so one permanent URL works in any mini
program or web page. The file ID is written without ``cloud://``
(``/files/wx.../prod-4gxyz.7072-prod-4gxyz/public/menu.png``; proxies merge the ``//``),
and must lie under one of the app's ``files`` prefixes (403 otherwise, asking nothing of
WeChat). A link is asked for ``LINK_LIFETIME`` and kept in the store, for every worker and
host, until ``MARGIN`` before it expires; only a request that has to ask WeChat takes a
token from its client's and its app's rate-limit buckets. Errors are plain text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable

import falcon

from webhook.config.cloud import FILE_PREFIX
from webhook.config.settings import AppConfig, Settings
from webhook.errors import MalformedRequest, RequestRejected, Retryable, StoreError, WeChatAPIError
from webhook.logsafe import Repeats, shown
from webhook.miniprogram.endpoints import limiter_for
from webhook.ratelimit import Limiter, RateLimited
from webhook.store.base import Store
from webhook.wechat.api import WeChatAPI
from webhook.wechat.cloud import LINK_LIFETIME

__all__ = ["FileResource", "register", "file_id", "MARGIN"]

log = logging.getLogger(__name__)

MARGIN = 600        # a cached link is handed out until this many seconds before it expires
MAX_FILE_ID = 1024


class NotServed(RequestRejected):
    status = 403


class NoSuchFile(RequestRejected):
    status = 404


def file_id(path: str) -> str:
    """The ``cloud://`` file ID a ``/files/{appid}/...`` path names; MalformedRequest for one
    that could name something else (``..``, an empty segment, a control character)."""
    rest = path[len("cloud:"):].lstrip("/") if path.startswith("cloud:") else path
    segments = rest.split("/")
    if not rest or len(rest) > MAX_FILE_ID or not rest.isprintable() or "\\" in rest \
            or len(segments) < 2 or any(s in ("", ".", "..") for s in segments):
        raise MalformedRequest("not a cloud file ID: /files/{appid}/{env}.{bucket}/{path}")
    return FILE_PREFIX + rest


class FileResource:
    def __init__(self, *, settings: Settings, api: WeChatAPI, store: Store, limiter: Limiter,
                 repeats: Repeats, clock: Callable[[], float]) -> None:
        self.settings, self.api, self.store = settings, api, store
        self.limiter, self.repeats, self.clock = limiter, repeats, clock

    def on_get(self, req: falcon.Request, resp: falcon.Response, appid: str, path: str) -> None:
        try:
            app = self.settings.app(appid)
            fileid = file_id(path)
            if not any(fileid.startswith(prefix) for prefix in app.files):
                raise NotServed("file not served: outside the app's files prefixes")
            url, until = self._link(app, fileid, req)
        except RateLimited as exc:
            resp.set_header("Retry-After", str(exc.retry_after))
            self._plain(resp, appid, 429, exc.reason, log_level=logging.INFO)
            return
        except RequestRejected as exc:
            self._plain(resp, appid, exc.status, exc.reason, log_level=logging.INFO)
            return
        except (WeChatAPIError, StoreError) as exc:
            status = 503 if isinstance(exc, (Retryable, StoreError)) else 502
            if status == 503:
                resp.set_header("Retry-After", "1")
            self._plain(resp, appid, status, "WeChat or the store is busy: retry later"
                        if status == 503 else "WeChat refused the link: see the server log",
                        log_level=logging.WARNING, detail=str(exc))
            return
        resp.status = falcon.HTTP_302
        resp.location = url
        resp.cache_control = ["private", f"max-age={max(0, int(until - self.clock()))}"]

    on_head = on_get

    def _link(self, app: AppConfig, fileid: str, req: falcon.Request) -> tuple[str, float]:
        """A download URL of ``fileid`` and until when to hand it out: the cached one, or a
        fresh one (rate-limited, as it asks WeChat)."""
        key = f"files:link:{app.appid}:{hashlib.sha256(fileid.encode()).hexdigest()[:32]}"
        now = self.clock()
        cached = _cached(self.store.get(key))
        if cached is not None and now < cached[1]:
            return cached
        self.limiter.check(app.appid, req.remote_addr, req.get_header("X-Forwarded-For"))
        (link,) = self.api.cloud.download_links(app.appid, [fileid], max_age=LINK_LIFETIME)
        if link.status != 0 or not link.url.startswith(("https://", "http://")):
            raise NoSuchFile("no such file")
        until = now + LINK_LIFETIME - MARGIN
        self.store.put(key, json.dumps({"url": link.url, "until": until}),
                       ttl=LINK_LIFETIME - MARGIN)
        return link.url, until

    def _plain(self, resp: falcon.Response, appid: str, status: int, text: str, *,
               log_level: int, detail: str = "") -> None:
        self.repeats.log(log, log_level, f"files {status}", "files appid=%s outcome=refused "
                         "status=%d reason=%s%s", appid if appid in self.settings.apps else "-",
                         status, text, f" detail={shown(detail)}" if detail else "")
        resp.status = falcon.code_to_http_status(status)
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = text


def _cached(raw: str | None) -> tuple[str, float] | None:
    try:
        found = json.loads(raw) if raw else None
        return (str(found["url"]), float(found["until"])) if found else None
    except (ValueError, KeyError, TypeError):
        return None


def register(app: falcon.App, *, settings: Settings, api: WeChatAPI, store: Store,
             clock: Callable[[], float] = time.time) -> None:
    """Add the route; its rate limits are those of the other mini program endpoints."""
    app.add_route("/files/{appid}/{path:path}", FileResource(
        settings=settings, api=api, store=store, limiter=limiter_for(settings, store, clock),
        repeats=Repeats(), clock=clock))
