"""The routing index (pure): which rules could match a message, without asking every rule.

Keyword terms of all rules go into one Aho-Corasick automaton (contains), a dict (exact) and a
dict keyed by prefix; every other rule is a candidate for the message kinds it accepts. The
candidates come back in priority order and the router still asks each one's own matcher, so
the index only ever saves work: it never decides a match.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from webhook.push.messages import Event, Message
from webhook.routing.matchers import Env, Matcher

__all__ = ["Automaton", "RuleIndex"]


class Automaton:
    """Aho-Corasick over many words: every word that occurs in a text, in one pass over it."""

    def __init__(self, words: Mapping[str, Iterable[int]]) -> None:
        goto: list[dict[str, int]] = [{}]
        out: list[tuple[int, ...]] = [()]
        for word, payload in words.items():
            state = 0
            for char in word:
                nxt = goto[state].get(char)
                if nxt is None:
                    nxt = len(goto)
                    goto[state][char] = nxt
                    goto.append({})
                    out.append(())
                state = nxt
            out[state] = tuple(payload)
        fail = [0] * len(goto)
        queue = deque(goto[0].values())
        while queue:  # breadth first, so a state's fail target is finished before it
            state = queue.popleft()
            for char, nxt in goto[state].items():
                queue.append(nxt)
                back = fail[state]
                while back and char not in goto[back]:
                    back = fail[back]
                fail[nxt] = goto[back].get(char, 0)
                if out[fail[nxt]]:
                    out[nxt] += out[fail[nxt]]
        self._goto, self._fail, self._out = goto, fail, out

    def find(self, text: str, into: set[int]) -> None:
        """Add the payload of every word occurring in ``text`` to ``into``."""
        goto, fail, out = self._goto, self._fail, self._out
        state = 0
        for char in text:
            while state and char not in goto[state]:
                state = fail[state]
            state = goto[state].get(char, 0)
            if out[state]:
                into.update(out[state])


class RuleIndex:
    """Candidate rule positions for a message, in priority order."""

    def __init__(self, matchers: Sequence[Matcher]) -> None:
        tables: dict[str, dict[str, list[int]]] = {"contains": {}, "exact": {}, "prefix": {}}
        self._others: list[tuple[int, frozenset[str] | None]] = []
        for position, matcher in enumerate(matchers):
            if matcher.terms is None:
                self._others.append((position, matcher.kinds))
                continue
            for mode, word in matcher.terms:
                tables[mode].setdefault(word, []).append(position)
        self._keyed = any(tables.values())
        self._automaton = Automaton(tables["contains"]) if tables["contains"] else None
        self._exact = tables["exact"]
        self._prefix = tables["prefix"]
        self._prefix_lengths = sorted({len(word) for word in self._prefix})
        self._by_kind: dict[tuple[str, str], tuple[int, ...]] = {}

    def _others_for(self, kind: str, detail: str) -> tuple[int, ...]:
        found = self._by_kind.get((kind, detail))
        if found is None:
            found = tuple(position for position, kinds in self._others
                          if kinds is None or kind in kinds or detail in kinds)
            if len(self._by_kind) < 256:  # MsgTypes are few; do not grow without bound
                self._by_kind[(kind, detail)] = found
        return found

    def candidates(self, message: Message, env: Env) -> Sequence[int]:
        detail = f"event:{message.event}" if isinstance(message, Event) else ""
        others = self._others_for(message.msg_type, detail)
        if not self._keyed or message.msg_type != "text":
            return others
        text = env.folded
        hits = set(others)
        if self._automaton is not None:
            self._automaton.find(text, hits)
        if self._exact:
            hits.update(self._exact.get(text, ()))
        for length in self._prefix_lengths:
            if length > len(text):
                break
            hits.update(self._prefix.get(text[:length], ()))
        return sorted(hits)
