"""What an operator does at the console: log in and out, answer a customer (text or an image,
through the durable outbox), show typing, mark a conversation handled, retry and purge
replies. Every state-changing request carries the session's CSRF token, and every action is
logged with the operator's name."""

from __future__ import annotations

import json
import secrets

import falcon

from webhook.console.auth import COOKIE, LOGIN_COOKIE, Session, csrf_ok, secure
from webhook.console.base import Refused, Resource, html_page, log
from webhook.console.html import conversation_url, e, page
from webhook.console.views import OPERATOR_RULE
from webhook.delivery.windows import verdict, window_key
from webhook.edge import read_body
from webhook.errors import Permanent, WeChatAPIError
from webhook.logsafe import shown
from webhook.push.messages import ImageReply, Reply, TextReply, hashed
from webhook.ratelimit import RateLimited
from webhook.store import NewReply
from webhook.wellformed import is_text

__all__ = ["Login", "Logout", "Customer", "RetryReplies", "PurgeReplies"]

MAX_TEXT = 2000   # characters of an operator's text message
_IMAGES = {"image/jpeg": (b"\xff\xd8\xff", "reply.jpg"),
           "image/png": (b"\x89PNG\r\n\x1a\n", "reply.png")}


class Login(Resource):
    def _form(self, req: falcon.Request, resp: falcon.Response, *, error: str = "",
              name: str = "") -> None:
        token = secrets.token_urlsafe(24)
        resp.set_cookie(LOGIN_COOKIE, token, max_age=3600, path="/console/login",
                        secure=secure(req), http_only=True, same_site="Strict")
        note = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
        html_page(resp, page("Log in", note + (
            '<form method="post" action="/console/login" class="login">'
            f'<input type="hidden" name="csrf" value="{e(token)}">'
            '<label for="name">Name</label><input id="name" name="name" autocomplete="username" '
            f'value="{e(name)}" required autofocus>'
            '<label for="password">Password</label><input id="password" name="password" '
            'type="password" autocomplete="current-password" required>'
            '<button type="submit">Log in</button></form>')))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.parts.auth.session(req) is not None:
            raise falcon.HTTPSeeOther("/console/conversations")
        self._form(req, resp)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = self.form(req)
        cookie = req.get_cookie_values(LOGIN_COOKIE)
        if not cookie or not csrf_ok(req, cookie[0], form):
            resp.status = falcon.HTTP_403
            self._form(req, resp, error="The form expired: log in again.")
            return
        name = form.get("name", "")[:64]
        auth = self.parts.auth
        try:
            auth.limiter.check("console", req.remote_addr, req.get_header("X-Forwarded-For"))
        except RateLimited as exc:
            log.warning("console login refused operator=%s client=%s reason=rate", shown(name),
                        shown(exc.client))
            resp.status = falcon.HTTP_429
            resp.set_header("Retry-After", str(exc.retry_after))
            self._form(req, resp, name=name, error=f"Too many attempts: try again in "
                                                   f"{exc.retry_after} s.")
            return
        session = auth.login(name, form.get("password", ""))
        if session is None:
            log.warning("console login failed operator=%s", shown(name))
            resp.status = falcon.HTTP_401
            self._form(req, resp, name=name, error="Wrong name or password.")
            return
        log.info("console login operator=%s", shown(session.operator.name))
        auth.set_cookie(req, resp, session)
        resp.unset_cookie(LOGIN_COOKIE, path="/console/login", same_site="Strict")
        raise falcon.HTTPSeeOther("/console/conversations")


class Logout(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = self.actor(req, self.form(req))
        self.parts.auth.logout(session)
        resp.unset_cookie(COOKIE, path="/console", same_site="Strict")
        log.info("console logout operator=%s", shown(session.operator.name))
        raise falcon.HTTPSeeOther("/console/login")


class Customer(Resource):
    """The actions on one customer's conversation: ``.../reply``, ``/image``, ``/handled`` and
    ``/typing`` (falcon's suffixed responders)."""

    def act(self, req: falcon.Request, appid: str, form: dict[str, str]) -> Session:
        session = self.actor(req, form)
        self.check_app(session.operator, appid)
        return session

    def _queue(self, session: Session, appid: str, openid: str, reply: Reply) -> str:
        """Queue ``reply`` through the outbox unless the customer's window is closed."""
        refused = verdict(self.store.get(window_key(appid, openid)), self.clock())
        if refused:
            raise Refused(409, f"not sent: {refused.removeprefix('quota: ')}")
        body = json.dumps(reply.payload(), ensure_ascii=False, separators=(",", ":"))
        rows = self.store.outbox_add([NewReply(appid, openid, body,
                                               f"{OPERATOR_RULE}{session.operator.name}")])
        self.parts.history.queued(rows)
        log.info("console reply operator=%s appid=%s user=%s id=%s type=%s",
                 shown(session.operator.name), appid, hashed(openid), rows[0].id, reply.msgtype)
        return rows[0].id

    def on_post_reply(self, req: falcon.Request, resp: falcon.Response, appid: str,
                      openid: str) -> None:
        form = self.form(req)
        session = self.act(req, appid, form)
        text = form.get("text", "").strip()
        if not text or len(text) > MAX_TEXT or not is_text(text):
            raise Refused(400, f"write between 1 and {MAX_TEXT} characters")
        row = self._queue(session, appid, openid, TextReply(text))
        self.done(req, resp, conversation_url(appid, openid), f"queued as reply #{row}")

    def on_post_image(self, req: falcon.Request, resp: falcon.Response, appid: str,
                      openid: str) -> None:
        """The image comes as the body (the script scales a photo down to ``max_body``), is
        uploaded to WeChat as temporary media, and its media id queued as an image reply."""
        session = self.act(req, appid, {})
        kind = (req.content_type or "").split(";")[0].strip().lower()
        if kind not in _IMAGES:
            raise Refused(415, "send a JPEG or PNG image")
        data = read_body(req, self.parts.settings.server.max_body)
        magic, filename = _IMAGES[kind]
        if not data.startswith(magic):
            raise Refused(400, f"the body is not a {kind} image")
        refused = verdict(self.store.get(window_key(appid, openid)), self.clock())
        if refused:   # asked before the upload, which would be wasted
            raise Refused(409, f"not sent: {refused.removeprefix('quota: ')}")
        try:
            media_id = self.parts.api.upload_image_data(appid, filename, data)
        except Permanent as exc:
            raise Refused(502, f"WeChat refused the image: errcode {exc.errcode}") from None
        except WeChatAPIError as exc:
            raise Refused(503, f"WeChat is busy or unreachable: errcode {exc.errcode}") from None
        row = self._queue(session, appid, openid, ImageReply(media_id=media_id))
        self.done(req, resp, conversation_url(appid, openid), f"queued as reply #{row}")

    def on_post_handled(self, req: falcon.Request, resp: falcon.Response, appid: str,
                        openid: str) -> None:
        session = self.act(req, appid, self.form(req))
        cleared = self.store.history_handled(appid, openid)
        log.info("console handled operator=%s appid=%s user=%s was_flagged=%s",
                 shown(session.operator.name), appid, hashed(openid), cleared)
        self.done(req, resp, conversation_url(appid, openid), "marked handled")

    def on_post_typing(self, req: falcon.Request, resp: falcon.Response, appid: str,
                       openid: str) -> None:
        """The customer sees "typing…" while the operator writes (WeChat allows it within 30 s
        of the last message either way, for 15 s at a time)."""
        session = self.act(req, appid, self.form(req))
        try:
            self.parts.api.typing(appid, openid)
        except WeChatAPIError as exc:
            raise Refused(409, f"no typing status: errcode {exc.errcode} {exc.errmsg}") from None
        log.info("console typing operator=%s appid=%s user=%s", shown(session.operator.name),
                 appid, hashed(openid))
        self.done(req, resp, conversation_url(appid, openid), "typing shown")


class RetryReplies(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = self.form(req)
        session = self.actor(req, form)
        operator = session.operator
        if form.get("all") == "1":
            ids = [r.id for r in self.store.outbox_list(state="dead", limit=10_000)
                   if operator.sees(r.appid)]
        else:
            row = self.store.outbox_get(form.get("id", ""))
            if row is None or not operator.sees(row.appid):
                raise Refused(404, "no such reply")
            ids = [row.id]
        count = self.store.outbox_requeue(ids) if ids else 0
        rows = [r for r in map(self.store.outbox_get, ids) if r is not None]
        self.parts.history.queued(rows)
        log.info("console retry operator=%s replies=%d ids=%s", shown(operator.name), count,
                 shown(",".join(ids)))
        self.done(req, resp, "/console/replies", f"{count} replies queued again")


class PurgeReplies(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = self.form(req)
        session = self.actor(req, form)
        if session.operator.apps is not None:
            raise Refused(403, "purging reaches every app: only an operator of all apps may")
        days = form.get("days", "")
        if not days.isdigit() or int(days) > 3650:
            raise Refused(400, "days must be a whole number from 0 to 3650")
        count = self.store.outbox_purge(before=self.clock() - int(days) * 86400)
        log.info("console purge operator=%s older_than_days=%s replies=%d",
                 shown(session.operator.name), days, count)
        self.done(req, resp, "/console/replies", f"{count} sent and dead replies purged")
