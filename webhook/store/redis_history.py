"""The Redis store's history: conversations, their timelines and the daily tallies the console
shows (``Store.history_*``, ``Store.tally_*``).

Key layout (``P`` the store's prefix; a conversation ``C`` is ``{appid}:{openid}``)::

    P hi:{C}            hash: item -> JSON {item, at, direction, body, rule, state, ...}
    P ho:{C}            zset: items by at (the timeline's order)
    P hm:{C}            hash: preview, flag, flagged_at
    P hc                zset: conversations by last activity
    P hf                zset: flagged conversations by flagged_at
    P hn                zset: "{appid}\\x1f{openid}\\x1f{item}" by when last noted (purge)
    P ta:{kind}:{day}   zset: name -> count
    P td                zset: "{kind}:{day}" by day (which tallies exist, for purge)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from webhook.store.base import Conversation, HistoryItem, HistoryNote, timeline_order
from webhook.store.redis_errors import store_errors

__all__ = ["RedisHistory"]

BATCH = 500   # items or conversations per purge script call
SCAN = 500    # conversations read at a time when listing those of some apps

# ARGV: prefix, now, appid, openid, has preview ("1"/"0"), preview, flag ("" none), items...
HISTORY_ADD = """
local P, NOW = ARGV[1], ARGV[2]
local C = ARGV[3] .. ':' .. ARGV[4]
local items, order = P .. 'hi:' .. C, P .. 'ho:' .. C
for i = 8, #ARGV do
  local new = cjson.decode(ARGV[i])
  local old = redis.call('HGET', items, new.item)
  if old then
    old = cjson.decode(old)
    new.at, new.direction, new.body = old.at, old.direction, old.body
  end
  redis.call('HSET', items, new.item, cjson.encode(new))
  redis.call('ZADD', order, new.at, new.item)
  redis.call('ZADD', P .. 'hn', NOW, ARGV[3] .. '\\31' .. ARGV[4] .. '\\31' .. new.item)
end
redis.call('ZADD', P .. 'hc', 'GT', NOW, C)
local meta = P .. 'hm:' .. C
if ARGV[5] == '1' then redis.call('HSET', meta, 'preview', ARGV[6]) end
if ARGV[7] ~= '' then
  redis.call('HSET', meta, 'flag', ARGV[7])
  redis.call('HSETNX', meta, 'flagged_at', NOW)
  redis.call('ZADD', P .. 'hf', 'NX', NOW, C)
end
return 1
"""

# ARGV: prefix, before, batch. Items last noted before ``before``, then conversations with
# no activity since; returns {items deleted, conversations deleted}.
HISTORY_PURGE = """
local P, before, batch = ARGV[1], '(' .. ARGV[2], tonumber(ARGV[3])
local members = redis.call('ZRANGEBYSCORE', P .. 'hn', '-inf', before, 'LIMIT', 0, batch)
for _, m in ipairs(members) do
  local a = string.find(m, '\\31', 1, true)
  local b = string.find(m, '\\31', a + 1, true)
  local C = string.sub(m, 1, a - 1) .. ':' .. string.sub(m, a + 1, b - 1)
  local item = string.sub(m, b + 1)
  redis.call('HDEL', P .. 'hi:' .. C, item)
  redis.call('ZREM', P .. 'ho:' .. C, item)
  redis.call('ZREM', P .. 'hn', m)
end
local gone = {}
if #members < batch then
  gone = redis.call('ZRANGEBYSCORE', P .. 'hc', '-inf', before, 'LIMIT', 0, batch)
  for _, C in ipairs(gone) do
    redis.call('DEL', P .. 'hi:' .. C, P .. 'ho:' .. C, P .. 'hm:' .. C)
    redis.call('ZREM', P .. 'hc', C)
    redis.call('ZREM', P .. 'hf', C)
  end
end
return {#members, #gone}
"""


def _item_json(item: HistoryItem) -> str:
    fields = {key: value for key, value in asdict(item).items() if value is not None}
    return json.dumps({**fields, "at": repr(item.at)}, ensure_ascii=False)


def _item(text: str) -> HistoryItem:
    fields = json.loads(text)
    return HistoryItem(**{**fields, "at": float(fields["at"])})


class RedisHistory:
    """Mixed into ``RedisStore``, whose client, prefix and clock it uses."""

    client: redis.Redis
    prefix: str
    clock: Callable[[], float]
    _scripts: dict[str, Any]
    _run_p: Callable[..., Any]

    @staticmethod
    def history_scripts(client: redis.Redis) -> dict[str, Any]:
        return {"HISTORY_ADD": client.register_script(HISTORY_ADD),
                "HISTORY_PURGE": client.register_script(HISTORY_PURGE)}

    @store_errors
    def history_add(self, notes: Sequence[HistoryNote]) -> None:
        now = repr(self.clock())
        pipe = self.client.pipeline(transaction=False)
        for note in notes:
            self._scripts["HISTORY_ADD"](
                args=(self.prefix, now, note.appid, note.openid,
                      "0" if note.preview is None else "1", note.preview or "",
                      note.flag or "", *(_item_json(item) for item in note.items)),
                client=pipe)
        pipe.execute()

    @store_errors
    def history_handled(self, appid: str, openid: str) -> bool:
        conversation = f"{appid}:{openid}"
        pipe = self.client.pipeline()
        pipe.hdel(f"{self.prefix}hm:{conversation}", "flag", "flagged_at")
        pipe.zrem(f"{self.prefix}hf", conversation)
        return bool(pipe.execute()[0])

    def _conversations(self, members: Sequence[tuple[str, float]]) -> list[Conversation]:
        pipe = self.client.pipeline(transaction=False)
        for member, _ in members:
            pipe.hgetall(f"{self.prefix}hm:{member}")
        found = []
        for (member, last_at), meta in zip(members, pipe.execute()):
            appid, _, openid = member.partition(":")
            flagged_at = meta.get("flagged_at")
            found.append(Conversation(appid, openid, float(last_at), meta.get("preview", ""),
                                      meta.get("flag"),
                                      None if flagged_at is None else float(flagged_at)))
        return found

    @store_errors
    def history_conversations(self, *, appids: Sequence[str] | None = None,
                              flagged: bool = False, limit: int = 100) -> list[Conversation]:
        if limit <= 0:
            return []
        wanted = None if appids is None else set(appids)

        def mine(member: str) -> bool:
            return wanted is None or member.partition(":")[0] in wanted

        if flagged:   # few: read them all, then order by activity
            members = [m for m in self.client.zrange(f"{self.prefix}hf", 0, -1) if mine(m)]
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.zscore(f"{self.prefix}hc", member)
            scored = sorted(((m, s) for m, s in zip(members, pipe.execute()) if s is not None),
                            key=lambda pair: pair[1], reverse=True)
            return self._conversations(scored[:limit])
        chosen: list[tuple[str, float]] = []
        start = 0
        while len(chosen) < limit:
            page = self.client.zrevrange(f"{self.prefix}hc", start, start + SCAN - 1,
                                         withscores=True)
            chosen += [(m, s) for m, s in page if mine(m)]
            if len(page) < SCAN:
                break
            start += SCAN
        return self._conversations(chosen[:limit])

    @store_errors
    def history_conversation(self, appid: str, openid: str) -> Conversation | None:
        member = f"{appid}:{openid}"
        last_at = self.client.zscore(f"{self.prefix}hc", member)
        return None if last_at is None else self._conversations([(member, last_at)])[0]

    @store_errors
    def history_timeline(self, appid: str, openid: str, *,
                         limit: int = 200) -> list[HistoryItem]:
        if limit <= 0:
            return []
        conversation = f"{appid}:{openid}"
        names = self.client.zrevrange(f"{self.prefix}ho:{conversation}", 0, limit - 1)
        if not names:
            return []
        texts = self.client.hmget(f"{self.prefix}hi:{conversation}", names)
        return sorted((_item(text) for text in texts if text is not None), key=timeline_order)

    @store_errors
    def history_purge(self, *, before: float) -> int:
        total = 0
        while True:
            items, conversations = self._run_p("HISTORY_PURGE", before, BATCH)
            total += items
            if items < BATCH and conversations < BATCH:
                return total

    @store_errors
    def tally_add(self, counts: Mapping[tuple[str, int, str], int]) -> None:
        if not counts:
            return
        pipe = self.client.pipeline()
        for (kind, day, name), n in counts.items():
            pipe.zincrby(f"{self.prefix}ta:{kind}:{day}", n, name)
            pipe.zadd(f"{self.prefix}td", {f"{kind}:{day}": day})
        pipe.execute()

    def _days(self, since: float, until: float) -> list[str]:
        return self.client.zrangebyscore(f"{self.prefix}td", since, until)

    @store_errors
    def tally_top(self, kind: str, *, since: int, limit: int = 20) -> list[tuple[str, int]]:
        keys = [f"{self.prefix}ta:{member}" for member in self._days(since, float("inf"))
                if member.rpartition(":")[0] == kind]
        if not keys or limit <= 0:
            return []
        counts = self.client.zunion(keys, withscores=True)
        ranked = sorted(((name, int(count)) for name, count in counts),
                        key=lambda pair: (-pair[1], pair[0]))
        return ranked[:limit]

    @store_errors
    def tally_purge(self, *, before: int) -> int:
        members = self._days(float("-inf"), f"({before}")
        if not members:
            return 0
        keys = [f"{self.prefix}ta:{member}" for member in members]
        pipe = self.client.pipeline()
        for key in keys:
            pipe.zcard(key)
        pipe.delete(*keys)
        pipe.zrem(f"{self.prefix}td", *members)
        return sum(pipe.execute()[:len(keys)])
