"""access_token issuing and checking, with WeChat's rotation rules (docs/protocol.md §6).

- ``/cgi-bin/token``: every fetch issues a new token; the previous one stays valid for 5 minutes,
  anything older is refused (40001).
- ``/cgi-bin/stable_token``: the same token while it is valid; rotated 5 minutes before expiry
  (old and new both valid meanwhile). ``force_refresh`` invalidates the previous token at once,
  at most 20 times per 24 h and 30 s apart; past that it answers the current token unchanged.
- The two families are isolated. Every token lives 7200 s; an expired one answers 42001.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webhook.testing.emulator.state import AppState, Fail, Request, TokenRecord

if TYPE_CHECKING:
    from webhook.testing.emulator.core import Emulator

__all__ = ["TOKEN_TTL", "OVERLAP", "fetch_token", "fetch_stable_token", "authorize"]

TOKEN_TTL = 7200
OVERLAP = 300
FORCE_PER_DAY = 20
FORCE_SPACING = 30


def authorize(emu: Emulator, req: Request) -> AppState:
    """The app owning the call's access_token: 41001 missing, 42001 expired, 40001 refused."""
    token = req.params.get("access_token")
    if not token:
        raise Fail(41001)
    record = emu.tokens.get(token)
    if record is None:
        raise Fail(40001)
    now = emu.now()
    if now >= record.expires_at:
        raise Fail(42001)
    if now >= record.valid_until:
        raise Fail(40001)
    return emu.apps[record.appid]


def fetch_token(emu: Emulator, req: Request) -> dict[str, Any]:
    """GET /cgi-bin/token?grant_type=client_credential&appid=&secret="""
    p = req.params
    app = _credentials(emu, p.get("grant_type"), p.get("appid"), p.get("secret"))
    now = emu.now()
    _limit(emu, app.token_prev, now)
    _limit(emu, app.token, now + OVERLAP)
    app.token_prev, app.token = app.token, _issue(emu, app, "token", now)
    app.fetches["token"] += 1
    return {"access_token": app.token, "expires_in": TOKEN_TTL}


def fetch_stable_token(emu: Emulator, req: Request) -> dict[str, Any]:
    """POST /cgi-bin/stable_token {grant_type, appid, secret, force_refresh}"""
    body = req.json()
    app = _credentials(emu, body.get("grant_type"), body.get("appid"), body.get("secret"))
    force = body.get("force_refresh", False)
    if not isinstance(force, bool):
        raise Fail(47001)
    now = emu.now()
    current = emu.tokens.get(app.stable) if app.stable else None
    if current is not None and now >= min(current.expires_at, current.valid_until):
        current = None
    if force and _may_force(app, now):
        app.forced.append(now)
        app.fetches["forced"] += 1
        _limit(emu, app.stable_prev, now)
        _limit(emu, app.stable, now)
        app.stable_prev, app.stable = None, _issue(emu, app, "stable_token", now)
    elif current is None:
        app.stable_prev, app.stable = None, _issue(emu, app, "stable_token", now)
    elif now >= current.expires_at - OVERLAP:
        # the old token keeps its remaining (< 5 min) life; the one before it is gone
        _limit(emu, app.stable_prev, now)
        app.stable_prev, app.stable = app.stable, _issue(emu, app, "stable_token", now)
    app.fetches["stable_token"] += 1
    record = emu.tokens[app.stable]
    return {"access_token": app.stable, "expires_in": int(record.expires_at - now)}


def _credentials(emu: Emulator, grant_type: Any, appid: Any, secret: Any) -> AppState:
    if grant_type != "client_credential":
        raise Fail(40002)
    if not appid:
        raise Fail(41002)
    app = emu.apps.get(appid) if isinstance(appid, str) else None
    if app is None:
        raise Fail(40013)
    if not secret:
        raise Fail(41004)
    if secret != app.secret:
        raise Fail(40125)
    return app


def _issue(emu: Emulator, app: AppState, kind: str, now: float) -> str:
    token = emu.new_token()
    emu.tokens[token] = TokenRecord(appid=app.appid, kind=kind, issued_at=now,
                                    expires_at=now + TOKEN_TTL, valid_until=now + TOKEN_TTL)
    if kind == "stable_token":
        app.fetches["stable_issued"] += 1
    return token


def _limit(emu: Emulator, token: str | None, until: float) -> None:
    record = emu.tokens.get(token) if token else None
    if record is not None:
        record.valid_until = min(record.valid_until, until)


def _may_force(app: AppState, now: float) -> bool:
    while app.forced and app.forced[0] <= now - 86400:
        app.forced.popleft()
    if len(app.forced) >= FORCE_PER_DAY:
        return False
    return not app.forced or now - app.forced[-1] >= FORCE_SPACING
