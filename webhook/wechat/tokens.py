"""The access_token provider: one token per appid, shared by every process and every host.

The token is cached in the store (``token:{appid}`` = JSON token, expires_at, fetched_at,
refresh_at) and refreshed ahead of expiry by one caller at a time, under a store lease lock;
the others keep using the still-valid token, or (cold cache) poll briefly for the new one.
When WeChat refuses a token (40001/40014/42001) it is dropped only if it is still the cached
one (compare-and-delete: another process may already have replaced it), fetched again once,
and the call retried once. A failed refresh keeps the old token until it really expires and
is retried with backoff, remembered in the store so that all processes back off together.

stable_token (docs/protocol.md §6.2) is the default: in normal mode it returns the same token to
every caller while valid, so after a 40001 a normal fetch may hand back the very token that
failed; only then do we use ``force_refresh``, at most 20 a day and 30 s apart (WeChat's
limits), tracked in the store.

A refused token is refreshed at most once per ``REFUSED_GAP`` seconds per app, across all
processes and hosts (a slot in the store): when WeChat keeps refusing every token (a
misconfigured app, another system rotating it), each failed call would otherwise fetch one.
Inside the gap the call fails Retryable without fetching, and the sender retries it later;
callers refused while the slot's refresh is running wait for its token, as for any refresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random as _random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from webhook.backoff import backoff
from webhook.config.settings import AppConfig
from webhook.errors import Permanent, Retryable, TokenInvalid, UnknownApp, WeChatAPIError, api_error
from webhook.logsafe import Repeats
from webhook.metrics import TOKEN_REFRESHES
from webhook.store.base import Store, lease_owner
from webhook.wechat.client import TokenGrant, WeChatClient

__all__ = ["TokenProvider", "TokenInfo"]

log = logging.getLogger(__name__)
T = TypeVar("T")

FORCE_PER_DAY = 20      # stable_token force_refresh limits (docs/protocol.md §6.2)
FORCE_GAP = 30.0
MIN_RECHECK = 30.0      # a token refreshed "too early" (stable: the same one) is re-asked this late
BACKOFF_BASE, BACKOFF_CAP = 2.0, 300.0
# One refresh of a refused token per app a minute: under a refusal that never ends this keeps
# /cgi-bin/token (a new token each fetch, 2000 a day) inside its daily quota, and stable_token
# could not force a new token sooner than 30 s anyway.
REFUSED_GAP = 60.0
# A process keeps using the token it read from the store this many seconds, so a send reads
# no store for it (with Redis a round trip, some tenth of a send's CPU in paired runs): a
# token replaced elsewhere is seen that much later at most, while the one it replaced is
# still valid (docs/protocol.md §6.1: both are, for five minutes).
REREAD = 1.0


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``wxpush token show`` prints; ``fingerprint`` tells tokens apart, reveals nothing."""

    appid: str
    fetched_at: float
    expires_at: float
    refresh_at: float
    fingerprint: str


@dataclass(frozen=True, slots=True)
class _Entry:
    token: str = field(repr=False)
    expires_at: float
    fetched_at: float
    refresh_at: float
    raw: str = field(repr=False)   # the stored JSON exactly, for compare-and-delete

    @classmethod
    def parse(cls, raw: str | None) -> _Entry | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(str(data["token"]), float(data["expires_at"]), float(data["fetched_at"]),
                       float(data.get("refresh_at", data["expires_at"])), raw)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable cached token entry")
            return None


class TokenProvider:
    """Tokens for the configured apps. ``refresh_ahead`` seconds (plus up to a fifth more, at
    random, so hosts do not all wake at once) before expiry one caller refreshes; ``lease``
    bounds how long a dead refresher blocks the others, ``wait`` how long a caller with no
    valid token waits for someone else's fetch (polling every ``poll`` seconds)."""

    def __init__(self, store: Store, client: WeChatClient, apps: Mapping[str, AppConfig], *,
                 endpoint: str = "stable", refresh_ahead: float = 300,
                 clock: Callable[[], float] = time.time, random: _random.Random | None = None,
                 sleep: Callable[[float], None] = time.sleep, lease: float = 10.0,
                 wait: float = 12.0, poll: float = 0.05) -> None:
        if endpoint not in ("stable", "classic"):
            raise ValueError(f'endpoint must be "stable" or "classic", not {endpoint!r}')
        self.store, self.client, self.apps, self.endpoint = store, client, apps, endpoint
        self.refresh_ahead = refresh_ahead
        self._clock, self._random, self._sleep = clock, random or _random.Random(), sleep
        self._lease, self._wait, self._poll = lease, wait, poll
        self._repeats = Repeats(clock=self._clock)
        self._seen: dict[str, tuple[_Entry, float]] = {}   # appid -> (entry, read at)

    # -- public ---------------------------------------------------------------------------
    def app(self, appid: str) -> AppConfig:
        app = self.apps.get(appid)
        if app is None:
            raise UnknownApp(f"unknown appid {appid}")
        return app

    def get(self, appid: str) -> str:
        """A valid access_token for ``appid``, from the cache or fetched (by one caller)."""
        return self._token(appid, failed=None)

    def call(self, appid: str, fn: Callable[[str], T]) -> T:
        """``fn(token)``; if WeChat refuses the token: invalidate-if-equal, refresh (at most
        once per ``REFUSED_GAP`` per app), retry once.

        Never raises TokenInvalid: a second refusal becomes Retryable (same errcode), and so
        does a refusal inside the gap with no new token to retry with."""
        token = self.get(appid)
        try:
            return fn(token)
        except TokenInvalid as exc:
            self._repeats.log(log, logging.WARNING, f"refused:{appid}",
                              "access_token refused appid=%s errcode=%s", appid, exc.errcode)
            refusal = exc
        try:
            token = self._token(appid, failed=token)
        except _GapNotOver:
            raise Retryable(refusal.errcode, f"{refusal.errmsg} (a refused token was replaced "
                            f"less than {REFUSED_GAP:.0f} s ago: retry later)") from None
        try:
            return fn(token)
        except TokenInvalid as exc:
            raise Retryable(exc.errcode, exc.errmsg) from None

    def current(self, appid: str) -> tuple[str, float]:
        """A valid access_token and when it expires (unix seconds): what the token service
        hands the business's other back ends, read from the store each time (never a token
        a client had replaced a moment ago)."""
        self._seen.pop(appid, None)
        return self._with_expiry(appid, self.get(appid))

    def replace(self, appid: str, refused: str) -> tuple[str, float]:
        """A caller saw ``refused`` rejected by WeChat: replace it if it is still the cached
        token (once per ``REFUSED_GAP``, as for our own calls), and answer the current one."""
        try:
            token = self._token(appid, failed=refused)
        except _GapNotOver:
            raise Retryable(-1, f"a refused token was replaced less than {REFUSED_GAP:.0f} s "
                                "ago: retry later") from None
        return self._with_expiry(appid, token)

    def _with_expiry(self, appid: str, token: str) -> tuple[str, float]:
        entry = self._load(appid)
        if entry is not None and entry.token == token:
            return token, entry.expires_at
        return token, self._clock() + MIN_RECHECK   # replaced meanwhile: ask again soon

    def refresh(self, appid: str, *, force: bool = False) -> None:
        """Fetch now (``force``: a new stable token, within WeChat's force limits)."""
        self._refresh(appid, usable=None, failed=None, always=True, force=force)

    def info(self, appid: str) -> TokenInfo | None:
        entry = self._load(appid)
        if entry is None:
            return None
        return TokenInfo(appid, entry.fetched_at, entry.expires_at, entry.refresh_at,
                         hashlib.sha256(entry.token.encode()).hexdigest()[:12])

    def peek(self, appid: str) -> str | None:
        """The cached token without fetching (``wxpush token show --reveal``)."""
        entry = self._load(appid)
        return entry.token if entry else None

    # -- the cache ------------------------------------------------------------------------
    def _token(self, appid: str, *, failed: str | None) -> str:
        self.app(appid)
        if failed is None:
            entry = self._recent(appid)
        else:   # read afresh, and no thread of ours takes the refused token from memory
            self._seen.pop(appid, None)
            entry = self._load(appid)
        now = self._clock()
        if entry and entry.token != failed:
            if now < entry.refresh_at:
                return entry.token
            if now < entry.expires_at:
                return self._refresh(appid, usable=entry, failed=failed)
        return self._refresh(appid, usable=None, failed=failed)

    def _refresh(self, appid: str, *, usable: _Entry | None, failed: str | None,
                 always: bool = False, force: bool = False) -> str:
        lock, owner = f"token:{appid}", lease_owner()
        deadline = self._clock() + self._wait
        while True:
            if self.store.acquire(lock, owner, lease=self._lease):
                try:
                    return self._refresh_locked(appid, failed=failed, always=always, force=force)
                finally:
                    self.store.release(lock, owner)
            if usable is not None:   # someone else is refreshing; ours is still good
                return usable.token
            self._sleep(self._poll)
            entry, now = self._load(appid), self._clock()
            if not always and entry and entry.token != failed and now < entry.refresh_at:
                return entry.token
            if now >= deadline:
                raise Retryable(-1, "timed out waiting for another process to fetch the token")

    def _refresh_locked(self, appid: str, *, failed: str | None, always: bool,
                        force: bool) -> str:
        now, entry = self._clock(), self._load(appid)
        good = entry if entry and entry.token != failed and now < entry.expires_at else None
        if not always and good and now < good.refresh_at:
            return good.token   # refreshed by another caller while we waited for the lock
        backoff = _Backoff.parse(self.store.get(f"token-backoff:{appid}"))
        if not always and backoff and now < backoff.next_at:
            if good:
                return good.token
            raise _fetch_error(api_error(backoff.errcode, backoff.errmsg))
        if failed is not None and good is None:   # the refresh is for a refused token
            # The app's one refresh of a refused token per REFUSED_GAP, if it is free
            if not self.store.put_new(f"token-refused:{appid}", repr(now), ttl=REFUSED_GAP):
                raise _GapNotOver()
            if entry and entry.token == failed:
                self.store.delete_if(f"token:{appid}", entry.raw)
        if force and self.endpoint == "stable" and not self._take_force(appid):
            raise Retryable(-1, f"force refresh refused: at most {FORCE_PER_DAY} a day, "
                                f"{FORCE_GAP:.0f} s apart")
        reason = "manual" if always else "refused" if failed is not None \
            else "expiring" if good else "missing"
        try:
            grant = self._fetch(appid, force=force)
            if failed is not None and grant.access_token == failed and self.endpoint == "stable":
                # Normal mode handed back the refused token: only force_refresh replaces it.
                if self._take_force(appid):
                    grant = self._fetch(appid, force=True)
                else:
                    log.warning("refused token handed back; force refresh limit reached appid=%s",
                                appid)
        except WeChatAPIError as exc:
            TOKEN_REFRESHES.labels(appid, reason, "failed").inc()
            self._note_failure(appid, exc, backoff)
            if good:
                log.warning("token refresh failed appid=%s errcode=%s; keeping the old token "
                            "until it expires", appid, exc.errcode)
                return good.token
            raise _fetch_error(exc) from None
        TOKEN_REFRESHES.labels(appid, reason, "ok").inc()
        if backoff:
            self.store.delete(f"token-backoff:{appid}")
        return self._save(appid, grant)

    def _fetch(self, appid: str, *, force: bool) -> TokenGrant:
        app = self.app(appid)
        if self.endpoint == "classic":
            grant = self.client.token(appid=appid, secret=app.secret)
        else:
            grant = self.client.stable_token(appid=appid, secret=app.secret, force_refresh=force)
        log.info("access_token fetched appid=%s endpoint=%s force=%s expires_in=%s",
                 appid, self.endpoint, force, grant.expires_in)
        return grant

    def _save(self, appid: str, grant: TokenGrant) -> str:
        now = self._clock()
        expires_at = now + grant.expires_in
        jitter = self._random.uniform(0, self.refresh_ahead / 5)
        # Never sooner than MIN_RECHECK: stable_token gives the same token until WeChat rotates it.
        refresh_at = max(expires_at - self.refresh_ahead - jitter,
                         now + min(MIN_RECHECK, grant.expires_in / 2))
        raw = json.dumps({"token": grant.access_token, "expires_at": expires_at,
                          "fetched_at": now, "refresh_at": refresh_at})
        self.store.put(f"token:{appid}", raw, ttl=grant.expires_in)
        self._seen.pop(appid, None)
        return grant.access_token

    def _recent(self, appid: str) -> _Entry | None:
        """The cached token as this process read it less than ``REREAD`` seconds ago, until
        it is due for refresh (then every caller looks for the refreshed one)."""
        now, seen = self._clock(), self._seen.get(appid)
        if seen is not None and now - seen[1] < REREAD and now < seen[0].refresh_at:
            return seen[0]
        entry = self._load(appid)
        if entry is not None:
            self._seen[appid] = (entry, now)
        return entry

    def _load(self, appid: str) -> _Entry | None:
        return _Entry.parse(self.store.get(f"token:{appid}"))

    # -- limits ---------------------------------------------------------------------------
    def _take_force(self, appid: str) -> bool:
        """Count one force_refresh if WeChat's limits allow it now (rolling 24 h window)."""
        now, verdict = self._clock(), [False]

        def take(old: str | None) -> str:
            times = [t for t in json.loads(old or "[]") if t > now - 86400]
            verdict[0] = len(times) < FORCE_PER_DAY and (not times or now - max(times) >= FORCE_GAP)
            return json.dumps(times + [now] if verdict[0] else times)

        self.store.update(f"token-force:{appid}", take, ttl=86400)
        return verdict[0]

    def _note_failure(self, appid: str, exc: WeChatAPIError, previous: _Backoff | None) -> None:
        failures = (previous.failures if previous else 0) + 1
        delay = backoff(failures - 1, base=BACKOFF_BASE, cap=BACKOFF_CAP, rng=self._random)
        record = {"failures": failures, "next_at": self._clock() + delay,
                  "errcode": exc.errcode, "errmsg": exc.errmsg}
        self.store.put(f"token-backoff:{appid}", json.dumps(record), ttl=delay + 3600)


class _GapNotOver(Exception):
    """A refused token was already replaced less than ``REFUSED_GAP`` ago."""


@dataclass(frozen=True, slots=True)
class _Backoff:
    failures: int
    next_at: float
    errcode: int
    errmsg: str

    @classmethod
    def parse(cls, raw: str | None) -> _Backoff | None:
        try:
            return cls(**json.loads(raw)) if raw else None
        except (ValueError, TypeError):
            return None


def _fetch_error(exc: WeChatAPIError) -> WeChatAPIError:
    """A failed token fetch as callers see it: a refused *secret* is not a refused token."""
    if isinstance(exc, TokenInvalid):
        return Permanent(exc.errcode, f"token fetch: {exc.errmsg}")
    return exc
