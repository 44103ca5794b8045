"""Routing (pure): rules in priority order, which rules a message reaches, running their handlers.

``Router.route`` is the fast, synchronous decision (no handler runs) made on the request path:
it says whether the push is handed to a human (``Route.transfer``). ``Route.run`` runs the
handlers later, in the background. Registration order is priority; the first match wins unless
the rule says ``continue_``. Keyword rules are found with one Aho-Corasick pass over the text,
so routing costs about the same with 10 or 10,000 of them.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from webhook.push.messages import Event, Message, Reply, TransferToHuman
from webhook.routing.handlerapi import OFFLINE, HandlerAPI
from webhook.routing.matchers import (ENTER_SESSION, IMAGE, MESSAGE, TEXT, Env, Matcher,
                                      MatchResult, as_matcher, event, fold)
from webhook.routing.ruleindex import RuleIndex

__all__ = ["Router", "Route", "Rule", "Context", "Handler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler gets besides the message."""

    appid: str
    match: Mapping[str, str]            # named regex groups ({} when the rule has no regex)
    re_match: re.Match[str] | None      # the regex match itself, for numbered groups
    clock: Callable[[], float]          # wall clock (unix seconds); fake in tests
    logger: logging.Logger
    rule: str                           # the rule's name, for the handler's own log lines
    wechat: HandlerAPI = OFFLINE        # the app's WeChat API: more sends, typing, cloud calls


Handler = Callable[[Message, Context], Reply | Iterable[Reply] | None]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    matcher: Matcher
    handler: Handler | None = None
    continue_: bool = False             # keep looking for more rules after this one matched
    transfer: bool = False              # answer the push passively with TransferToHuman
    fallback: bool = False              # only when no earlier rule matched
    on_error: Reply | None = None       # sent instead when the handler raises


@dataclass(frozen=True, slots=True)
class Route:
    """The rules a message reached, in order; ``transfer`` is known without running anything."""

    steps: tuple[tuple[Rule, MatchResult], ...] = ()
    transfer: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule, _ in self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def run(self, message: Message, *, appid: str, clock: Callable[[], float] = time.time,
            logger: logging.Logger = log, budget: float = 3.0,
            rescue: Callable[[], Route] | None = None,
            observe: Callable[[str, float, Exception | None], None] | None = None,
            reveal: bool = False, wechat: HandlerAPI = OFFLINE) -> list[Reply]:
        """Run the handlers in order and collect their replies (``wechat``: the push's
        ``ctx.wechat``).

        A handler that raises is logged with its rule name and traceback, and the customer
        gets its rule's ``on_error`` reply or else, once, the replies of ``rescue()`` (the
        fallback rule this message would reach, ``Router.rescue``); one that takes longer
        than ``budget`` seconds is logged. ``observe(rule, seconds, error)`` is told of each
        handler's run; ``reveal``: the error's text may quote the message, so it is logged
        only when told (or at DEBUG). TransferToHuman returned here is dropped: the push was
        answered long ago; declare hand-offs with ``Router.transfer``.
        """
        replies: list[Reply] = []
        rescued = False
        for rule, result in self.steps:
            if rule.handler is None:
                continue
            ctx = Context(appid=appid, match=result.groups, re_match=result.re_match, clock=clock,
                          logger=logger, rule=rule.name, wechat=wechat)
            started, error = time.monotonic(), None
            try:
                produced = rule.handler(message, ctx)
            except Exception as exc:  # a handler bug must not cost other rules or messages
                error = exc
                _log_failure(logger, rule.name, appid, exc, reveal)
                if rule.on_error is not None:
                    replies.append(rule.on_error)
                elif rescue is not None and not rescued and not rule.fallback:
                    rescued = True
                    replies.extend(rescue().run(message, appid=appid, clock=clock, logger=logger,
                                                budget=budget, observe=observe, reveal=reveal,
                                                wechat=wechat))
                continue
            finally:
                spent = time.monotonic() - started
                if observe is not None:
                    observe(rule.name, spent, error)
                if spent > budget:
                    logger.warning("handler over budget rule=%s appid=%s seconds=%.3f budget=%s",
                                   rule.name, appid, spent, budget)
            replies.extend(_replies(produced, rule.name, logger))
        return replies


def _log_failure(logger: logging.Logger, rule: str, appid: str, exc: Exception,
                 reveal: bool) -> None:
    """The traceback at ERROR; the exception's text (which may quote the customer's
    message) only when ``reveal`` or at DEBUG."""
    frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
    what = type(exc).__name__
    if reveal or logger.isEnabledFor(logging.DEBUG):
        what += f": {exc}"
    logger.error("handler failed rule=%s appid=%s error=%s\nTraceback (most recent call "
                 "last):\n%s%s", rule, appid, type(exc).__name__, frames, what)


def _replies(produced: Any, rule: str, logger: logging.Logger) -> list[Reply]:
    if produced is None:
        return []
    items = [produced] if isinstance(produced, Reply) else list(produced)
    kept = []
    for item in items:
        if isinstance(item, TransferToHuman):
            logger.warning("handler returned TransferToHuman rule=%s: dropped; use "
                           "router.transfer() to hand off", rule)
        elif isinstance(item, Reply):
            kept.append(item)
        else:
            logger.error("handler returned a non-reply rule=%s type=%s", rule,
                         type(item).__name__)
    return kept


class Router:
    """Rules registered in priority order, plus included routers at their place in that order.

    The first ``route`` (or ``compile``) freezes the router: register everything first.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._items: list[Rule | Router] = []
        self._index: RuleIndex | None = None
        self._rules: tuple[Rule, ...] = ()
        self._transfers: tuple[tuple[frozenset[str] | None, frozenset[str] | None], ...] = ()

    # --- registration ----------------------------------------------------------------------

    def add(self, matcher: Any, handler: Handler | None = None, *, name: str | None = None,
            continue_: bool = False, transfer: bool = False, fallback: bool = False,
            on_error: Reply | None = None) -> Rule:
        """Register one rule (the non-decorator form). ``on_error``: the reply the customer
        gets when the handler raises (default: the fallback's, if one matches)."""
        if self._index is not None:
            raise RuntimeError(f"router {self.name!r} is already routing; register rules first")
        if handler is None and not transfer:
            raise ValueError("a rule needs a handler unless it is a transfer rule")
        label = name or (self._label(handler.__name__) if handler else self._label("transfer"))
        rule = Rule(label, as_matcher(matcher), handler, continue_, transfer, fallback, on_error)
        self._items.append(rule)
        return rule

    def _label(self, base: str) -> str:
        return f"{self.name}.{base}" if self.name else base

    def _decorator(self, matcher: Any, **options: Any) -> Callable[[F], F]:
        def register(handler: F) -> F:
            self.add(matcher, handler, **options)
            return handler
        return register

    def message(self, matcher: Any = None, *, name: str | None = None,
                continue_: bool = False, on_error: Reply | None = None) -> Callable[[F], F]:
        """Handle what ``matcher`` matches; no matcher = any text, image or card (no events).
        ``on_error``: what the customer gets if the handler raises (see ``add``)."""
        return self._decorator(MESSAGE if matcher is None else matcher, name=name,
                               continue_=continue_, on_error=on_error)

    def text(self, matcher: Any = None, *, name: str | None = None,
             continue_: bool = False, on_error: Reply | None = None) -> Callable[[F], F]:
        return self._decorator(_both(TEXT, matcher), name=name, continue_=continue_,
                               on_error=on_error)

    def image(self, matcher: Any = None, *, name: str | None = None,
              continue_: bool = False, on_error: Reply | None = None) -> Callable[[F], F]:
        return self._decorator(_both(IMAGE, matcher), name=name, continue_=continue_,
                               on_error=on_error)

    def event(self, event_name: str, matcher: Any = None, *, name: str | None = None,
              continue_: bool = False, on_error: Reply | None = None) -> Callable[[F], F]:
        return self._decorator(_both(event(event_name), matcher), name=name, continue_=continue_,
                               on_error=on_error)

    def enter_session(self, matcher: Any = None, *, name: str | None = None,
                      continue_: bool = False, on_error: Reply | None = None
                      ) -> Callable[[F], F]:
        """``user_enter_tempsession``: the customer opened the chat (2 replies within 1 min)."""
        return self._decorator(_both(ENTER_SESSION, matcher), name=name, continue_=continue_,
                               on_error=on_error)

    def transfer(self, matcher: Any, *, name: str | None = None,
                 on_error: Reply | None = None) -> Callable[[F], F]:
        """A hand-off: the push is answered with TransferToHuman; the handler may add replies.
        Without a handler: ``router.add(matcher, transfer=True, name=...)``."""
        return self._decorator(matcher, name=name, transfer=True, on_error=on_error)

    def fallback(self, matcher: Any = None, *, name: str | None = None) -> Callable[[F], F]:
        """Only when no earlier rule matched; no matcher = any text, image or card."""
        return self._decorator(MESSAGE if matcher is None else matcher, name=name,
                               fallback=True)

    def include(self, router: Router) -> None:
        """Insert ``router``'s rules here, at this point of the priority order."""
        if router is self:
            raise ValueError("a router cannot include itself")
        self._items.append(router)

    # --- routing ---------------------------------------------------------------------------

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule, included ones in place, in priority order."""
        return tuple(self._flatten())

    def _flatten(self) -> Iterable[Rule]:
        for item in self._items:
            if isinstance(item, Router):
                yield from item._flatten()
            else:
                yield item

    def compile(self) -> None:
        """Build the index now (otherwise the first ``route`` does it) and freeze the router."""
        if self._index is None:
            self._rules = self.rules
            self._index = RuleIndex([rule.matcher for rule in self._rules])
            self._transfers = tuple(
                (rule.matcher.kinds, None if rule.matcher.terms is None
                 else frozenset(word for _, word in rule.matcher.terms))
                for rule in self._rules if rule.transfer)

    def may_transfer(self, msg_type: str, content: str) -> bool:
        """False when no transfer rule can match a message of ``msg_type`` whose text is
        ``content``: the answer is then ``success`` without parsing the push or routing it.

        Asks only what matchers declare: ``kinds``, and ``terms`` (one of their words occurs
        in the folded text of whatever the matcher matches). So it may say True for a message
        ``route`` does not hand off, never False for one it does. Events are never handed
        off (docs/protocol.md §4.4).
        """
        if self._index is None:
            self.compile()
        if msg_type == "event":
            return False
        folded: str | None = None
        for kinds, words in self._transfers:
            if kinds is not None and msg_type not in kinds:
                continue
            if words is None:
                return True
            if folded is None:
                folded = fold(content) if msg_type == "text" else ""
            for word in words:   # a plain loop: any() over a generator costs three times more
                if word in folded:
                    return True
        return False

    def route(self, message: Message, *, appid: str) -> Route:
        """Which rules ``message`` reaches, in order. Pure and fast; runs no handler."""
        if self._index is None:
            self.compile()
        rules = self._rules
        env = Env(appid, message)
        steps: list[tuple[Rule, MatchResult]] = []
        transfer = False
        for position in self._index.candidates(message, env):
            rule = rules[position]
            if rule.fallback and steps:
                continue
            result = rule.matcher.match(message, env)
            if result is None:
                continue
            steps.append((rule, result))
            transfer = transfer or rule.transfer
            if not rule.continue_:
                break
        # WeChat forwards messages, never events, to the human agents (docs/protocol.md §4.4).
        if transfer and isinstance(message, Event):
            transfer = False
        return Route(tuple(steps), transfer)

    def rescue(self, message: Message, *, appid: str) -> Route:
        """The first fallback rule ``message`` matches, as if no other rule had: what the
        customer gets when a handler raises and its rule names no ``on_error``."""
        if self._index is None:
            self.compile()
        env = Env(appid, message)
        for rule in self._rules:
            if rule.fallback:
                result = rule.matcher.match(message, env)
                if result is not None:
                    return Route(((rule, result),))
        return Route()


def _both(kind: Matcher, matcher: Any) -> Matcher:
    return kind if matcher is None else kind & as_matcher(matcher)
