"""The console's pages: conversations, one conversation, what needs a human, the reply queue.
``?part=...`` answers only the part of a page the script refreshes while it is open."""

from __future__ import annotations

import falcon

from webhook.console.base import Resource, html_page
from webhook.console.html import conversation_url, e, post_form, short_openid
from webhook.console.views import conversation_list, reply_rows, timeline, window_status
from webhook.delivery.windows import open_windows, window_key

__all__ = ["ConversationsPage", "ConversationPage", "NeedsHumanPage", "RepliesPage", "Home"]

LISTED = 200      # conversations on a page
TIMELINE = 300    # items of a timeline
QUEUE = 200       # replies of each state on the replies page
REFRESH_MS = 1500

_HISTORY_OFF = ("History is off ([server] history_days = 0): no conversation is kept. "
                "Pending and dead replies are under Replies.")


def _refreshing(url: str, markup: str, *, cls: str = "") -> str:
    """A part the script fetches again every REFRESH_MS while the page is open."""
    return (f'<div class="live {cls}" data-refresh="{e(url)}" data-every="{REFRESH_MS}">'
            f'{markup}</div>')


class Home:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPSeeOther("/console/conversations")


class ConversationsPage(Resource):
    """Every customer of the operator's apps, the most recently active first."""

    flagged_only = False
    title, slug = "Conversations", "conversations"
    empty = "No conversation yet."

    def listing(self, req: falcon.Request, apps: list[str]) -> str:
        chosen = req.get_param("app")
        if chosen is not None:
            apps = [chosen] if chosen in apps else []
        found = self.store.history_conversations(appids=apps, flagged=self.flagged_only,
                                                 limit=LISTED)
        return conversation_list(found, show_app=len(self.parts.settings.apps) > 1,
                                 empty=self.empty)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = self.viewer(req)
        operator = session.operator
        apps = [a for a in self.parts.settings.apps if operator.sees(a)]
        if not self.parts.history.enabled:
            self.render(resp, session, self.title, f'<p class="empty">{_HISTORY_OFF}</p>',
                        active=self.slug)
            return
        listing = self.listing(req, apps)
        if req.get_param("part") == "list":
            html_page(resp, listing)
            return
        chosen = req.get_param("app") or ""
        tabs = ""
        if len(apps) > 1:
            links = [f'<a href="/console/{self.slug}"{" aria-current=page" if not chosen else ""}>'
                     'All apps</a>']
            links += [f'<a href="/console/{self.slug}?app={e(a)}"'
                      f'{" aria-current=page" if a == chosen else ""}>{e(a)}</a>' for a in apps]
            tabs = f'<p class="tabs">{"".join(links)}</p>'
        query = f"&app={e(chosen)}" if chosen else ""
        self.render(resp, session, self.title,
                    tabs + _refreshing(f"/console/{self.slug}?part=list{query}", listing),
                    active=self.slug)


class NeedsHumanPage(ConversationsPage):
    """Conversations where a hand-off rule fired, no rule matched, a handler failed or a
    reply went dead, until someone marks them handled."""

    flagged_only = True
    title, slug = "Needs a human", "needs-human"
    empty = "Nothing needs a human right now."


class ConversationPage(Resource):
    """One customer: the timeline, the send window, the answer box."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, appid: str,
               openid: str) -> None:
        session = self.viewer(req)
        self.check_app(session.operator, appid)
        items = self.store.history_timeline(appid, openid, limit=TIMELINE) \
            if self.parts.history.enabled else []
        if req.get_param("part") == "timeline":
            html_page(resp, timeline(appid, items))
            return
        now = self.clock()
        window = window_status(open_windows(self.store.get(window_key(appid, openid)), now), now)
        if req.get_param("part") == "window":
            html_page(resp, e(window))
            return
        conversation = self.store.history_conversation(appid, openid) \
            if self.parts.history.enabled else None
        url = conversation_url(appid, openid)
        csrf = session.csrf
        flag = ""
        if conversation is not None and conversation.flag:
            flag = (f'<div class="flagged"><span class="flag">{e(conversation.flag)}</span>'
                    + post_form(f"{url}/handled", csrf,
                                '<button type="submit">Mark handled</button>', gone=".flagged")
                    + "</div>")
        answer = post_form(
            f"{url}/reply", csrf,
            '<label for="reply-text">Answer as a person</label>'
            '<textarea id="reply-text" name="text" rows="3" maxlength="2000" required '
            f'data-typing="{e(url)}/typing"></textarea>'
            '<button type="submit">Send</button>', cls="answer")
        image = ('<form class="image" data-upload="' + e(f"{url}/image") + '" data-max="'
                 + str(self.parts.settings.server.max_body) + '">'
                 '<label for="reply-image">Send an image</label>'
                 '<input id="reply-image" type="file" accept="image/jpeg,image/png">'
                 '<button type="submit">Upload and send</button></form>')
        body = (f'<p class="customer">Customer <code>{e(openid)}</code> · app '
                f'<code>{e(appid)}</code></p>{flag}'
                + _refreshing(f"{url}?part=timeline", timeline(appid, items), cls="scroll")
                + '<p class="window">Send window: '
                + f'<span class="live" data-refresh="{e(url)}?part=window" '
                  f'data-every="{REFRESH_MS * 4}">{e(window)}</span></p>'
                + answer + image + '<p class="result" role="status"></p>')
        self.render(resp, session, f"Customer {short_openid(openid)}", body,
                    active="conversations")


class RepliesPage(Resource):
    """Pending and dead replies across customers, with retry and purge (the outbox CLI)."""

    def rows(self, state: str, apps: list[str]) -> list:
        return [r for r in self.store.outbox_list(state=state, limit=QUEUE) if r.appid in apps]

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = self.viewer(req)
        operator = session.operator
        apps = [a for a in self.parts.settings.apps if operator.sees(a)]
        waiting = self.rows("pending", apps) + self.rows("sending", apps)
        dead = self.rows("dead", apps)
        csrf = session.csrf
        parts = (f'<h2>Pending ({len(waiting)})</h2>'
                 + reply_rows(sorted(waiting, key=lambda r: int(r.id)), csrf=csrf, retry=False)
                 + f'<h2>Dead ({len(dead)})</h2>'
                 + (post_form("/console/replies/retry", csrf,
                              '<input type="hidden" name="all" value="1">'
                              '<button type="submit">Retry all dead</button>') if dead else "")
                 + reply_rows(dead, csrf=csrf, retry=True))
        if req.get_param("part") == "list":
            html_page(resp, parts)
            return
        purge = ""
        if operator.apps is None:   # purging reaches every app's rows
            purge = post_form(
                "/console/replies/purge", csrf,
                '<label for="purge-days">Purge sent and dead replies older than</label> '
                '<input id="purge-days" name="days" type="number" min="0" max="3650" '
                'value="7" required> days <button type="submit">Purge</button>', cls="purge")
        self.render(resp, session, "Replies",
                    _refreshing("/console/replies?part=list", parts) + purge, active="replies")
