"""Who is at the console: operators log in with a name and password (``[[console.operators]]``,
scrypt hashes), get a session cookie and a CSRF token for every state-changing request.

Sessions live in the store under a hash of their cookie (the store alone yields no usable
cookie) with the console's ``session_ttl``, so every worker and host knows them and a logout
ends them everywhere. The cookie is HttpOnly, SameSite=Strict, and Secure unless the console
is reached on loopback over plain HTTP (a browser on the server itself). Login attempts take
tokens from rate-limit buckets in the store (per client address, and for the console as a
whole) before a password is checked: a refusal is cheap, a guess is slow.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import falcon

from webhook.config.settings import ConsoleConfig, Operator
from webhook.passwords import verify_password
from webhook.ratelimit import Bucket, Limiter, trusted_networks
from webhook.store import Store

__all__ = ["Auth", "Session", "COOKIE", "LOGIN_COOKIE", "CSRF_FIELD", "CSRF_HEADER"]

COOKIE = "wxpush_console"
LOGIN_COOKIE = "wxpush_console_login"   # the login form's own CSRF token (no session yet)
CSRF_FIELD, CSRF_HEADER = "csrf", "X-CSRF-Token"
# Login attempts: 5 at once per client address, then one every 12 s; 60 at once for all
# clients together, then 1 a second.
PER_CLIENT, PER_CONSOLE = Bucket(rate=1 / 12, burst=5), Bucket(rate=1.0, burst=60)
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True, slots=True)
class Session:
    operator: Operator
    csrf: str
    token: str


class Auth:
    """Logging in and out, and who a request comes from."""

    def __init__(self, store: Store, console: ConsoleConfig, *, trusted: tuple[str, ...],
                 clock: Callable[[], float]) -> None:
        self._store, self._console, self._clock = store, console, clock
        self.limiter = Limiter(store, per_client=PER_CLIENT, per_app=PER_CONSOLE,
                               trusted=trusted_networks(trusted), clock=clock)

    @staticmethod
    def _key(token: str) -> str:
        return f"console:session:{hashlib.sha256(token.encode()).hexdigest()}"

    def login(self, name: str, password: str) -> Session | None:
        """A new session if ``password`` is ``name``'s; None otherwise (the same work either
        way, so the answer's time tells nothing of which names exist)."""
        operator = self._console.operator(name)
        if not verify_password(password, operator.password_hash if operator else None) \
                or operator is None:
            return None
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._store.put(self._key(token), json.dumps({"name": operator.name, "csrf": csrf}),
                        ttl=self._console.session_ttl)
        return Session(operator, csrf, token)

    def session(self, req: falcon.Request) -> Session | None:
        """The request's session: a known cookie of an operator still configured."""
        token = req.get_cookie_values(COOKIE)
        if not token or len(token[0]) > 100:
            return None
        raw = self._store.get(self._key(token[0]))
        if raw is None:
            return None
        record = json.loads(raw)
        operator = self._console.operator(record.get("name", ""))
        return None if operator is None else Session(operator, record["csrf"], token[0])

    def logout(self, session: Session) -> None:
        self._store.delete(self._key(session.token))

    def set_cookie(self, req: falcon.Request, resp: falcon.Response, session: Session) -> None:
        resp.set_cookie(COOKIE, session.token, max_age=self._console.session_ttl, path="/console",
                        secure=secure(req), http_only=True, same_site="Strict")


def secure(req: falcon.Request) -> bool:
    """Whether cookies must be Secure: always, but for a browser on the server itself
    talking plain HTTP to a loopback address."""
    return req.scheme == "https" or req.host not in _LOOPBACK


def csrf_ok(req: falcon.Request, expected: str, form: dict[str, str]) -> bool:
    """The request carries ``expected``, in the form or the X-CSRF-Token header."""
    given = form.get(CSRF_FIELD) or req.get_header(CSRF_HEADER) or ""
    return hmac.compare_digest(given.encode(), expected.encode())
