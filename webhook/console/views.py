"""Markup of what the console shows: conversations, a timeline, a customer's send window, the
reply queue. Each function takes plain data and returns escaped markup (``html.e``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from webhook.console.html import conversation_url, e, post_form, short_openid, when
from webhook.store import Conversation, HistoryItem, OutboxRow

__all__ = ["said", "sent", "conversation_list", "timeline", "window_status", "reply_rows",
           "OPERATOR_RULE"]

OPERATOR_RULE = "console:"   # the rule of a reply an operator wrote: "console:<name>"
PREVIEW = 120                # characters of a message shown in a list


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def said(body: str) -> str:
    """What a customer sent, in one line of plain text."""
    fields = _json(body)
    kind = fields.get("type")
    if kind == "text":
        return str(fields.get("text", ""))
    if kind == "image":
        return "[image]"
    if kind == "miniprogrampage":
        return f"[mini program card] {fields.get('title', '')}"
    if kind == "enter":
        source = fields.get("session_from")
        return "[opened the chat]" + (f" from {source}" if source else "")
    if kind == "event":
        return f"[event {fields.get('event', '')}]"
    return f"[{kind or 'message'}]"


def sent(body: str) -> str:
    """What was sent to a customer (a ``Reply.payload()``), in one line of plain text."""
    fields = _json(body)
    kind = fields.get("msgtype")
    part = fields.get(kind, {}) if isinstance(kind, str) else {}
    part = part if isinstance(part, dict) else {}
    if kind == "text":
        return str(part.get("content", ""))
    if kind == "image":
        return "[image]"
    if kind == "link":
        return f"[link] {part.get('title', '')} {part.get('url', '')}"
    if kind == "miniprogrampage":
        return f"[mini program card] {part.get('title', '')} → {part.get('pagepath', '')}"
    return f"[{kind or 'reply'}]"


def _cut(text: str) -> str:
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "…"


def conversation_list(conversations: Sequence[Conversation], *, show_app: bool,
                      empty: str) -> str:
    if not conversations:
        return f'<p class="empty">{e(empty)}</p>'
    rows = []
    for c in conversations:
        flag = f'<span class="flag">{e(c.flag)}</span>' if c.flag else ""
        app = f'<span class="app">{e(c.appid)}</span>' if show_app else ""
        rows.append(
            f'<li><a href="{e(conversation_url(c.appid, c.openid))}">'
            f'<span class="who">{e(short_openid(c.openid))}</span>{app}{flag}'
            f'<span class="preview">{e(_cut(said(c.preview)))}</span>'
            f'<span class="at">{when(c.last_at)}</span></a></li>')
    return f'<ul class="conversations">{"".join(rows)}</ul>'


def _incoming(appid: str, item: HistoryItem) -> str:
    fields = _json(item.body)
    if fields.get("type") == "image" and fields.get("media_id"):
        src = f"/console/media/{quote(appid, safe='')}/{quote(str(fields['media_id']), safe='')}"
        return (f'<a href="{e(src)}" target="_blank" rel="noopener">'
                f'<img src="{e(src)}" alt="image from the customer" loading="lazy"></a>')
    if fields.get("type") == "miniprogrampage":
        return (f'<span class="card">Mini program card: {e(fields.get("title", ""))}'
                f'<br><code>{e(fields.get("page_path", ""))}</code></span>')
    cls = "text" if fields.get("type") == "text" else "event"
    return f'<span class="{cls}">{e(said(item.body))}</span>'


def _outgoing(item: HistoryItem) -> tuple[str, str]:
    """(the reply's text, its footer: who or which rule, state, WeChat's error)."""
    who = (f"answered by {item.rule[len(OPERATOR_RULE):]}" if item.rule.startswith(OPERATOR_RULE)
           else f"rule {item.rule}" if item.rule else "")
    error = ""
    if item.errcode is not None or item.errmsg:
        code = f"errcode {item.errcode}: " if item.errcode is not None else ""
        error = f' <span class="error">{e(code + (item.errmsg or ""))}</span>'
    state = f'<span class="state state-{e(item.state)}">{e(item.state)}</span>'
    return f'<span class="text">{e(sent(item.body))}</span>', f"{e(who)} {state}{error}"


def timeline(appid: str, items: Sequence[HistoryItem]) -> str:
    if not items:
        return '<p class="empty">Nothing kept for this customer yet.</p>'
    lines = []
    for item in items:
        if item.direction == "in":
            matched = f" · rule {e(item.rule)}" if item.rule else ""
            lines.append(f'<li class="in"><div class="bubble">{_incoming(appid, item)}</div>'
                         f'<div class="meta">{when(item.at)}{matched}</div></li>')
        else:
            text, footer = _outgoing(item)
            lines.append(f'<li class="out"><div class="bubble">{text}</div>'
                         f'<div class="meta">{when(item.at)} · {footer}</div></li>')
    return f'<ol class="timeline">{"".join(lines)}</ol>'


def window_status(windows: list[tuple[float, str, int]] | None, now: float) -> str:
    """The customer's send windows as wxpush noted them (``windows.open_windows``)."""
    if windows is None:
        return ("No send window noted for this customer: WeChat decides whether a message "
                "goes through.")
    if not windows:
        return "The send window is closed: WeChat refuses messages until the customer writes."
    parts = []
    for closes, name, left in windows:
        minutes = max(0, int(closes - now)) // 60
        span = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
        what = "after a message" if name == "msg" else "after entering the chat"
        parts.append(f"{max(0, left)} message{'s' if left != 1 else ''} left, {span} left "
                     f"({what})")
    return "; ".join(parts)


def reply_rows(rows: Sequence[OutboxRow], *, csrf: str, retry: bool) -> str:
    if not rows:
        return '<p class="empty">None.</p>'
    lines = []
    for row in rows:
        error = ""
        if row.errcode is not None or row.errmsg:
            code = f"errcode {row.errcode}: " if row.errcode is not None else ""
            error = f'<span class="error">{e(code + (row.errmsg or ""))}</span>'
        button = post_form("/console/replies/retry", csrf,
                           f'<input type="hidden" name="id" value="{e(row.id)}">'
                           '<button type="submit">Retry</button>') if retry else ""
        lines.append(
            f'<li data-id="{e(row.id)}"><a href="{e(conversation_url(row.appid, row.openid))}">'
            f'<span class="who">{e(short_openid(row.openid))}</span>'
            f'<span class="app">{e(row.appid)}</span></a>'
            f'<span class="text">{e(_cut(sent(row.body)))}</span>'
            f'<span class="meta">#{e(row.id)} · {e(row.state)} · rule {e(row.rule or "-")} · '
            f'{row.attempts} tries · {when(row.updated_at)}</span>{error}{button}</li>')
    return f'<ul class="replies">{"".join(lines)}</ul>'
