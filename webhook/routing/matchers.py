"""Matchers: small predicates over one message that compose with ``&``, ``|`` and ``~``.

Keywords are compared after NFKC normalisation and case folding, so full-width and half-width
forms (``ＶＩＰ１`` / ``vip1``) and upper and lower case match each other. Regexes see the
content NFKC-normalised and stripped, but not case-folded (write ``(?i)`` for that).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.push.messages import (ENTER_SESSION_EVENT, EnterSessionEvent, Event, Message,
                                   TextMessage)

__all__ = [
    "Matcher", "MatchResult", "MATCHED", "Env", "fold", "as_matcher", "And", "Or", "Not",
    "Predicate",
    "TEXT", "IMAGE", "MINIPROGRAM_PAGE", "EVENT", "ENTER_SESSION", "MESSAGE", "ANY",
    "msgtype", "event", "keyword", "exact", "prefix", "regex", "session_from", "app",
]


def fold(text: str) -> str:
    """The form keywords are compared in: NFKC, case-folded, outer whitespace stripped."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


@dataclass(frozen=True, slots=True)
class MatchResult:
    """A successful match: named regex groups (``ctx.match``) and the regex match itself."""

    groups: Mapping[str, str] = field(default_factory=dict)
    re_match: re.Match[str] | None = None


MATCHED = MatchResult()


class Env:
    """What a matcher may look at besides the message: the app, and text forms computed once."""

    __slots__ = ("appid", "_message", "_folded", "_plain")

    def __init__(self, appid: str, message: Message) -> None:
        self.appid, self._message = appid, message
        self._folded: str | None = None
        self._plain: str | None = None

    @property
    def folded(self) -> str:
        """Text content as keywords see it ("" for anything but a text message)."""
        if self._folded is None:
            message = self._message
            self._folded = fold(message.content) if isinstance(message, TextMessage) else ""
        return self._folded

    @property
    def plain(self) -> str:
        """Text content as regexes see it: NFKC-normalised and stripped."""
        if self._plain is None:
            message = self._message
            self._plain = (unicodedata.normalize("NFKC", message.content).strip()
                           if isinstance(message, TextMessage) else "")
        return self._plain


class Matcher:
    """Base class. ``match`` returns a MatchResult or None.

    ``kinds`` (message kinds this can match, None = any) and ``terms`` ((mode, folded word)
    pairs one of which must occur in the text, None = no such word) let the router skip most
    rules without calling them; they are necessary conditions, never sufficient ones.
    """

    kinds: frozenset[str] | None = None
    terms: tuple[tuple[str, str], ...] | None = None

    def match(self, message: Message, env: Env) -> MatchResult | None:
        raise NotImplementedError

    def __call__(self, message: Message, env: Env | None = None) -> MatchResult | None:
        return self.match(message, env or Env("", message))

    def __and__(self, other: Any) -> Matcher:
        return And(self, as_matcher(other))

    def __rand__(self, other: Any) -> Matcher:
        return And(as_matcher(other), self)

    def __or__(self, other: Any) -> Matcher:
        return Or(self, as_matcher(other))

    def __ror__(self, other: Any) -> Matcher:
        return Or(as_matcher(other), self)

    def __invert__(self) -> Matcher:
        return Not(self)


def as_matcher(value: Any) -> Matcher:
    """A Matcher as is; any other callable ``f(message) -> bool`` wrapped as one."""
    if isinstance(value, Matcher):
        return value
    if callable(value):
        return Predicate(value)
    raise TypeError(f"not a matcher or callable: {value!r}")


class And(Matcher):
    def __init__(self, *parts: Matcher) -> None:
        self.parts = tuple(p for part in parts for p in (part.parts if isinstance(part, And)
                                                         else (part,)))
        self.kinds = next((p.kinds for p in self.parts if p.kinds is not None), None)
        self.terms = next((p.terms for p in self.parts if p.terms is not None), None)

    def match(self, message: Message, env: Env) -> MatchResult | None:
        groups: dict[str, str] = {}
        re_match = None
        for part in self.parts:
            result = part.match(message, env)
            if result is None:
                return None
            groups.update(result.groups)
            re_match = re_match or result.re_match
        return MatchResult(groups, re_match) if groups or re_match else MATCHED


class Or(Matcher):
    def __init__(self, *parts: Matcher) -> None:
        self.parts = tuple(p for part in parts for p in (part.parts if isinstance(part, Or)
                                                         else (part,)))
        if all(p.kinds is not None for p in self.parts):
            self.kinds = frozenset().union(*(p.kinds or () for p in self.parts))
        if all(p.terms is not None for p in self.parts):
            self.terms = tuple(t for p in self.parts for t in p.terms or ())

    def match(self, message: Message, env: Env) -> MatchResult | None:
        for part in self.parts:
            result = part.match(message, env)
            if result is not None:
                return result
        return None


class Not(Matcher):
    def __init__(self, inner: Matcher) -> None:
        self.inner = inner

    def match(self, message: Message, env: Env) -> MatchResult | None:
        return MATCHED if self.inner.match(message, env) is None else None


class Predicate(Matcher):
    """Any callable ``f(message) -> bool`` (or -> MatchResult)."""

    def __init__(self, function: Callable[[Message], Any]) -> None:
        self.function = function

    def match(self, message: Message, env: Env) -> MatchResult | None:
        result = self.function(message)
        if isinstance(result, MatchResult):
            return result
        return MATCHED if result else None


class _OneOf(Matcher):
    """``value(message, env)`` is one of ``values`` (None never is)."""

    def __init__(self, value: Callable[[Message, Env], str | None], values: tuple[str, ...],
                 kinds: frozenset[str] | None = None) -> None:
        self.value, self.values, self.kinds = value, frozenset(values), kinds

    def match(self, message: Message, env: Env) -> MatchResult | None:
        return MATCHED if self.value(message, env) in self.values else None


class _Any(Matcher):
    def match(self, message: Message, env: Env) -> MatchResult | None:
        return MATCHED


class _Keyword(Matcher):
    kinds = frozenset({"text"})

    def __init__(self, mode: str, words: tuple[str, ...]) -> None:
        folded = tuple(dict.fromkeys(fold(word) for word in words))
        if not folded or not all(folded):
            raise ValueError(f"{mode} needs at least one non-blank word")
        self.mode, self.words = mode, folded
        self.terms = tuple((mode, word) for word in folded)
        self._set = frozenset(folded)

    def match(self, message: Message, env: Env) -> MatchResult | None:
        text = env.folded
        if self.mode == "contains":
            hit = any(word in text for word in self.words)
        elif self.mode == "exact":
            hit = text in self._set
        else:
            hit = text.startswith(self.words)
        return MATCHED if hit else None  # env.folded is "" for anything but text


class _Regex(Matcher):
    kinds = frozenset({"text"})

    def __init__(self, pattern: str | re.Pattern[str], flags: int = 0) -> None:
        self.pattern = re.compile(pattern, flags) if isinstance(pattern, str) else pattern

    def match(self, message: Message, env: Env) -> MatchResult | None:
        if not isinstance(message, TextMessage):
            return None
        found = self.pattern.search(env.plain)
        return MatchResult(found.groupdict(default=""), found) if found else None


def msgtype(*types: str) -> Matcher:
    """``MsgType`` is one of ``types`` (also types we do not model, e.g. "voice")."""
    return _OneOf(lambda message, env: message.msg_type, types, frozenset(types))


def event(*names: str) -> Matcher:
    """An event push whose ``Event`` is one of ``names``."""
    return _OneOf(lambda message, env: message.event if isinstance(message, Event) else None,
                  names, frozenset(f"event:{name}" for name in names))


def keyword(*words: str) -> Matcher:
    """A text message that contains one of ``words``."""
    return _Keyword("contains", words)


def exact(*words: str) -> Matcher:
    """A text message that is exactly one of ``words`` (outer whitespace ignored)."""
    return _Keyword("exact", words)


def prefix(*words: str) -> Matcher:
    """A text message that starts with one of ``words``."""
    return _Keyword("prefix", words)


def regex(pattern: str | re.Pattern[str], flags: int = 0) -> Matcher:
    """A text message the pattern finds (``re.search``); named groups go to ``ctx.match``."""
    return _Regex(pattern, flags)


def session_from(*values: str) -> Matcher:
    """``user_enter_tempsession`` from a button whose ``session-from`` is one of ``values``."""
    return _OneOf(lambda message, env: message.session_from
                  if isinstance(message, EnterSessionEvent) else None,
                  values, frozenset({f"event:{ENTER_SESSION_EVENT}"}))


def app(*appids: str) -> Matcher:
    """A push to one of these apps."""
    return _OneOf(lambda message, env: env.appid, appids)


TEXT = msgtype("text")
IMAGE = msgtype("image")
MINIPROGRAM_PAGE = msgtype("miniprogrampage")
EVENT = msgtype("event")
ENTER_SESSION = event(ENTER_SESSION_EVENT)
MESSAGE = msgtype("text", "image", "miniprogrampage")  # what a customer sent; no events
ANY = _Any()  # everything, including events and types we do not model
