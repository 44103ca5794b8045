"""The console's other pages: the rules (with "try a message"), health, a customer's image
fetched from WeChat, and the console's own script and style sheet."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from importlib import resources

import falcon

from webhook.console.base import Parts, Refused, Resource, log, secure_headers
from webhook.console.html import e, when
from webhook.console.views import sent
from webhook.delivery.history import TALLY_DAYS, day_of
from webhook.errors import Permanent, WeChatAPIError
from webhook.logsafe import shown
from webhook.push.messages import TextMessage
from webhook.routing.live import LiveRouter
from webhook.routing.router import Router
from webhook.store.base import mask_url

__all__ = ["RulesPage", "HealthPage", "MediaFile", "StaticFile"]

MAX_TRY = 500   # characters of a message to try
_MEDIA_ID = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")
_IMAGE_TYPES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))
_STATIC = {"console.js": "text/javascript; charset=utf-8",
           "console.css": "text/css; charset=utf-8"}


class RulesPage(Resource):
    def _tried(self, current: Router, text: str, appid: str) -> str:
        """What the server would do with ``text`` from a customer: the same routing and the
        same handlers (nothing is sent)."""
        message = TextMessage(to_user="gh_console", from_user="o_console_try",
                              create_time=int(self.clock()), msg_id=1, content=text)
        route = current.route(message, appid=appid)
        if not route:
            return '<p class="tried">No rule matches: the push is only acknowledged.</p>'
        replies = route.run(message, appid=appid, clock=self.clock, logger=log, budget=3.0)
        answer = ("transfer_customer_service (to a human agent)" if route.transfer
                  else "success")
        lines = "".join(f"<li>{e(sent(json.dumps(r.payload(), ensure_ascii=False)))}</li>"
                        for r in replies) or "<li>nothing</li>"
        return (f'<div class="tried"><p>Matched: <b>{e(" → ".join(route.names))}</b></p>'
                f'<p>Answer to WeChat: {e(answer)}</p><p>Sent:</p><ul>{lines}</ul></div>')

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = self.viewer(req)
        apps = [a for a in self.parts.settings.apps if session.operator.sees(a)]
        router = self.parts.router
        current = router.current if isinstance(router, LiveRouter) else router
        status = "Rules are fixed for this process (no rules file)."
        if isinstance(router, LiveRouter) and router.path:
            status = (f"File <code>{e(router.path)}</code>, in force since "
                      f"{when(router.loaded_at)}.")
            if router.error:
                status += (f' <span class="error">The last edit was refused, the previous '
                           f'rules stay: {e(router.error)}</span>')
        routers = self.parts.settings.server.routers
        if routers:
            status += " Python routers, first: " + ", ".join(
                f"<code>{e(spec)}</code>" for spec in routers) + "."
        rows = "".join(
            f"<li><b>{e(rule.name)}</b>"
            + "".join(f' <span class="tag">{tag}</span>' for tag, on in (
                ("hand-off", rule.transfer), ("fallback", rule.fallback),
                ("continues", rule.continue_)) if on) + "</li>"
            for rule in current.rules) or "<li>No rules: pushes are only acknowledged.</li>"
        text = (req.get_param("text") or "")[:MAX_TRY]
        chosen = req.get_param("app") if req.get_param("app") in apps else (apps or [""])[0]
        options = "".join(f'<option{" selected" if a == chosen else ""}>{e(a)}</option>'
                          for a in apps)
        tried = self._tried(current, text, chosen) if text.strip() else ""
        since = day_of(self.clock()) - TALLY_DAYS + 1
        hits = self.store.tally_top("rule", since=since, limit=50)
        unmatched = self.store.tally_top("unmatched", since=since, limit=20)
        body = (
            f'<p>{status}</p><ol class="rules">{rows}</ol>'
            '<h2>Try a message</h2><form method="get" action="/console/rules" class="try">'
            f'<label for="try-text">A customer writes</label><input id="try-text" name="text" '
            f'value="{e(text)}" maxlength="{MAX_TRY}" required>'
            + (f'<select name="app" aria-label="app">{options}</select>' if len(apps) > 1 else "")
            + '<button type="submit">Try</button></form>' + tried
            + f'<h2>Rule hits, last {TALLY_DAYS} days</h2>'
            + _counts(hits, "No rule fired yet.")
            + '<h2>Most frequent messages no rule matched</h2>'
            + _counts(unmatched, "None (or history is off)."))
        self.render(resp, session, "Rules", body, active="rules")


def _counts(pairs: list[tuple[str, int]], empty: str) -> str:
    if not pairs:
        return f'<p class="empty">{e(empty)}</p>'
    rows = "".join(f'<li><span class="n">{n}</span> {e(name)}</li>' for name, n in pairs)
    return f'<ol class="counts">{rows}</ol>'


# (metric sample, what it counts) of the headline metrics
HEADLINES = (
    ("wxpush_pushes_total", "pushes received (WeChat's retries included)"),
    ("wxpush_duplicates_dropped_total", "retries of a recorded push dropped"),
    ("wxpush_rejections_total", "requests refused (bad signature, malformed, too large ...)"),
    ("wxpush_replies_sent_total", "replies WeChat accepted"),
    ("wxpush_sends_total", "calls to WeChat's send API"),
    ("wxpush_dead_letters_total", "replies set aside for good"),
    ("wxpush_token_refreshes_total", "access_token fetches"),
)


def _headlines(totals: Mapping[str, float]) -> list[tuple[str, str]]:
    """The headline counts since the server started, and the mean answer time to WeChat."""
    rows = [(label, f"{totals.get(name, 0):.0f}") for name, label in HEADLINES]
    count = totals.get("wxpush_answer_seconds_count", 0)
    if count:
        mean = totals.get("wxpush_answer_seconds_sum", 0) / count * 1000
        rows.append(("mean time to answer a push", f"{mean:.1f} ms"))
    return rows


def _figures(parts: Parts) -> list[tuple[str, str]]:
    server = parts.settings.server
    store = parts.store
    outbox = store.outbox_stats()
    inbox = store.inbox_stats()
    days = server.history_days
    return [("store", mask_url(server.store)),
            ("apps", ", ".join(parts.settings.apps)),
            ("replies", ", ".join(f"{n} {state}" for state, n in outbox.items())),
            ("pushes", f"{inbox['pending']} waiting to be handled, {inbox['dead']} dead"),
            ("history", f"kept {days} days" if days else "off (history_days = 0)")]


class HealthPage(Resource):
    """/readyz's checks, the headline metrics and the store's figures."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = self.viewer(req)
        rows = "".join(f'<li class="{"ok" if c.ok else "bad"}"><b>{"OK" if c.ok else "Problem"}'
                       f'</b> {e(c.name)}: {e(c.detail)}</li>' for c in self.parts.readiness())
        try:
            counts = _headlines(self.parts.totals())
        except Exception as exc:   # the page is for a server in trouble: say it, do not fail
            counts = [("metrics", f"cannot be read: {type(exc).__name__}")]
        self.render(resp, session, "Health",
                    f'<h2>Ready?</h2><ul class="checks">{rows}</ul>'
                    '<h2>Since the server started</h2>' + _table(counts)
                    + '<h2>Store</h2>' + _table(_figures(self.parts)), active="health")


def _table(rows: list[tuple[str, str]]) -> str:
    return '<dl class="figures">' + "".join(f"<dt>{e(label)}</dt><dd>{e(value)}</dd>"
                                              for label, value in rows) + "</dl>"


class MediaFile(Resource):
    """A customer's image, fetched from WeChat (media/get) for a logged-in operator; wxpush
    keeps only its media id, and WeChat keeps the file 3 days."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, appid: str,
               media_id: str) -> None:
        session = self.viewer(req)
        self.check_app(session.operator, appid)
        if not _MEDIA_ID.match(media_id):
            raise Refused(404, "no such media")
        started = time.monotonic()
        try:
            data = self.parts.api.get_media(appid, media_id)
        except Permanent as exc:
            raise Refused(404, f"WeChat has no such media (it keeps them 3 days): errcode "
                          f"{exc.errcode}") from None
        except WeChatAPIError as exc:
            raise Refused(503, f"WeChat is busy or unreachable: errcode {exc.errcode}") from None
        log.info("console media operator=%s appid=%s bytes=%d seconds=%.2f",
                 shown(session.operator.name), appid, len(data), time.monotonic() - started)
        kind = next((t for magic, t in _IMAGE_TYPES if data.startswith(magic)), None)
        secure_headers(resp)
        resp.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
        resp.cache_control = ["private", "max-age=3600"]
        resp.content_type = kind or "application/octet-stream"
        if kind is None:
            resp.set_header("Content-Disposition", "attachment")
        resp.data = data


class StaticFile:
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in _STATIC:
            raise Refused(404, "no such file")
        secure_headers(resp)
        resp.cache_control = ["no-cache"]
        resp.content_type = _STATIC[name]
        resp.data = resources.files("webhook.console").joinpath("static", name).read_bytes()

