"""The console's page shell and the small pieces every page uses.

Every value that is not a literal of this package goes through ``e()`` (HTML-escaped, quotes
included) on its way into markup: a customer who writes ``<img src=x onerror=alert(1)>`` is
shown those characters. Pages hold no inline script or style (the Content-Security-Policy
forbids both); behaviour comes from ``static/console.js``, looks from ``static/console.css``.
"""

from __future__ import annotations

import html
import time
from urllib.parse import quote

__all__ = ["e", "page", "post_form", "when", "conversation_url", "short_openid", "NAV",
           "CONTENT_SECURITY_POLICY"]

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self'; connect-src 'self'; form-action 'self'; "
                           "base-uri 'none'; frame-ancestors 'none'")
NAV = (("conversations", "Conversations"), ("needs-human", "Needs a human"),
       ("replies", "Replies"), ("rules", "Rules"), ("health", "Health"))


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def when(at: float) -> str:
    """A time, in UTC as written, turned into the browser's own time zone by the script."""
    stamp = time.gmtime(at)
    return (f'<time datetime="{time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp)}">'
            f'{time.strftime("%Y-%m-%d %H:%M:%S", stamp)} UTC</time>')


def conversation_url(appid: str, openid: str) -> str:
    return f"/console/conversations/{quote(appid, safe='')}/{quote(openid, safe='')}"


def short_openid(openid: str) -> str:
    """Enough of an openid to tell customers apart in a list."""
    return openid if len(openid) <= 12 else f"…{openid[-10:]}"


def post_form(action: str, csrf: str, inner: str, *, cls: str = "inline", gone: str = "") -> str:
    """A form posting ``inner``'s fields with the CSRF token; once it went through, the
    script removes the closest element matching ``gone`` (if any)."""
    remove = f' data-gone="{e(gone)}"' if gone else ""
    return (f'<form method="post" action="{e(action)}" class="{cls}"{remove}>'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">{inner}</form>')


def page(title: str, body: str, *, operator: str | None = None, csrf: str = "",
         active: str = "", flagged: int | None = None) -> str:
    """A whole page: the navigation (when logged in) and ``body`` (markup)."""
    nav = ""
    if operator is not None:
        links = []
        for slug, label in NAV:
            count = f' <span class="count">{flagged}</span>' if slug == "needs-human" and \
                flagged else ""
            current = ' aria-current="page"' if slug == active else ""
            links.append(f'<a href="/console/{slug}"{current}>{label}{count}</a>')
        logout = post_form("/console/logout", csrf,
                           f'<button type="submit" class="link">Log out {e(operator)}</button>')
        nav = f'<nav>{"".join(links)}{logout}</nav>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf" content="{e(csrf)}">'
        f'<title>{e(title)} · wxpush</title>'
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script></head><body>'
        f'<header><span class="brand">wxpush</span>{nav}</header>'
        f'<main><h1>{e(title)}</h1>{body}</main></body></html>')
