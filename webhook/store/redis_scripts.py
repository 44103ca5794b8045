"""Lua scripts of the Redis store: each read-modify-write runs atomically inside Redis.

The key layout is described in ``webhook.store.redis``. Times are unix seconds from the
store's clock, passed in ARGV as Python ``repr`` text and stored verbatim (Lua would round
them to 14 digits); Lua only compares them. Optional fields arrive as ``""`` (None) or
``"=" + text``.
"""

from __future__ import annotations

__all__ = [
    "PUT_NEW", "DELETE_IF", "SWAP", "ACQUIRE",
    "INBOX_RECORD", "INBOX_TAKE", "INBOX_RENEW", "INBOX_FINISH", "INBOX_RETRY", "INBOX_DEAD",
    "INBOX_REQUEUE", "INBOX_PURGE",
    "OUTBOX_ADD", "OUTBOX_CLAIM", "OUTBOX_MARK", "OUTBOX_REQUEUE", "OUTBOX_PURGE",
]

# -- values and locks: KEYS[1] is the key; its value is "<expires_at or empty>|<text>" ------
_SPLIT = """
local function split(cur)
  local e, text = string.match(cur, '^([^|]*)|(.*)$')
  return e, text
end
local function live(e, now) return e == '' or tonumber(e) > now end
"""

# ARGV: now, encoded value, px ("" = no ttl)
PUT_NEW = _SPLIT + """
local cur = redis.call('GET', KEYS[1])
if cur then
  local e = split(cur)
  if live(e, tonumber(ARGV[1])) then return 0 end
end
if ARGV[3] == '' then redis.call('SET', KEYS[1], ARGV[2])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""

# ARGV: now, expected text. Also releases a lock: its value is its holder.
DELETE_IF = _SPLIT + """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local e, text = split(cur)
if text ~= ARGV[2] or not live(e, tonumber(ARGV[1])) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# ARGV: what was read ("" none), new text ("" delete), px ("" none). Written only if the
# value is still what was read: ``update``'s compare-and-set.
SWAP = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
elseif ARGV[3] == '' then redis.call('SET', KEYS[1], ARGV[2])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""

# ARGV: now, owner, expires_at, px. Free, expired, or already ours: (re)take it.
ACQUIRE = _SPLIT + """
local cur = redis.call('GET', KEYS[1])
if cur then
  local e, holder = split(cur)
  if holder ~= ARGV[2] and live(e, tonumber(ARGV[1])) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3] .. '|' .. ARGV[2], 'PX', ARGV[4])
return 1
"""

# -- inbox and outbox: ARGV[1] is the key prefix, ARGV[2] the current time --------------
_COMMON = """
local P = ARGV[1]
local NOW = ARGV[2]
local now = tonumber(NOW)

local function row_key(id) return P .. 'ob:row:' .. id end
local function queue_key(user) return P .. 'ob:q:' .. user end

-- File a user under 'ready' (head pending) or 'leased' (head sending), scored by the head
-- row's next_at (due time, or lease expiry); out of both when it has no unfinished row.
local function schedule(user)
  local head = redis.call('ZRANGE', queue_key(user), 0, 0)[1]
  if not head then
    redis.call('ZREM', P .. 'ob:ready', user)
    redis.call('ZREM', P .. 'ob:leased', user)
    return
  end
  local r = redis.call('HMGET', row_key(head), 'state', 'next_at')
  if r[1] == 'sending' then
    redis.call('ZREM', P .. 'ob:ready', user)
    redis.call('ZADD', P .. 'ob:leased', r[2], user)
  else
    redis.call('ZREM', P .. 'ob:leased', user)
    redis.call('ZADD', P .. 'ob:ready', r[2], user)
  end
end

local function set_state(id, old, new)
  redis.call('ZREM', P .. 'ob:st:' .. old, id)
  redis.call('ZADD', P .. 'ob:st:' .. new, id, id)
end

local function set_optional(key, field, value)
  if value == '' then redis.call('HDEL', key, field)
  else redis.call('HSET', key, field, string.sub(value, 2)) end
end

-- Queue the replies given as (appid, openid, body, rule) in ARGV from ``first`` on.
local function enqueue(first)
  local out = {}
  for i = first, #ARGV, 4 do
    local id = tostring(redis.call('INCR', P .. 'ob:seq'))
    local user = ARGV[i] .. ':' .. ARGV[i + 1]
    redis.call('HSET', row_key(id), 'id', id, 'appid', ARGV[i], 'openid', ARGV[i + 1],
               'body', ARGV[i + 2], 'rule', ARGV[i + 3], 'state', 'pending', 'attempts', 0,
               'next_at', NOW, 'created_at', NOW, 'updated_at', NOW)
    redis.call('ZADD', P .. 'ob:st:pending', id, id)
    redis.call('ZADD', P .. 'ob:all', id, id)
    redis.call('ZADD', queue_key(user), id, id)
    schedule(user)
    out[#out + 1] = redis.call('HGETALL', row_key(id))
  end
  return out
end

-- Set an inbox entry aside: out of the claimable set, into the dead one, kept until purged.
local function bury(key, error)
  local k = P .. 'in:' .. key
  redis.call('HSET', k, 'state', 'dead', 'error', error)
  redis.call('HDEL', k, 'owner', 'lease_until')
  redis.call('PERSIST', k)
  redis.call('ZREM', P .. 'in:due', key)
  redis.call('ZADD', P .. 'in:dead', redis.call('HGET', k, 'received_at'), key)
end
"""

# ARGV: prefix, now, key, appid, format, payload, answer, received_at, expires_at, px.
# Returns nil if new (due now, and the delivery processes woken), else the recorded entry's
# answer and state.
INBOX_RECORD = _COMMON + """
local k = P .. 'in:' .. ARGV[3]
local r = redis.call('HMGET', k, 'expires_at', 'state', 'answer')
if r[1] and (r[2] == 'dead' or tonumber(r[1]) > now) then return {r[3], r[2]} end
redis.call('DEL', k)
redis.call('HSET', k, 'key', ARGV[3], 'appid', ARGV[4], 'format', ARGV[5],
           'payload', ARGV[6], 'answer', ARGV[7], 'received_at', ARGV[8], 'state', 'pending',
           'attempts', 0, 'lease_until', NOW, 'expires_at', ARGV[9])
redis.call('PEXPIRE', k, ARGV[10])
redis.call('ZADD', P .. 'in:due', NOW, ARGV[3])
redis.call('LPUSH', P .. 'in:new', 1)
redis.call('LTRIM', P .. 'in:new', 0, 0)
return false
"""

# ARGV: prefix, now, owner, lease_until, limit, max_attempts, error of one that used them up.
# Returns a list of entries' fields (those set aside instead of taken among them).
INBOX_TAKE = _COMMON + """
local limit = tonumber(ARGV[5])
local out = {}
while #out < limit do
  local keys = redis.call('ZRANGEBYSCORE', P .. 'in:due', '-inf', NOW, 'LIMIT', 0, limit - #out)
  if #keys == 0 then break end
  for _, key in ipairs(keys) do
    local k = P .. 'in:' .. key
    local r = redis.call('HMGET', k, 'state', 'expires_at', 'lease_until')
    if r[1] ~= 'pending' or tonumber(r[2]) <= now then
      redis.call('ZREM', P .. 'in:due', key)
    elseif tonumber(r[3]) > now then
      redis.call('ZADD', P .. 'in:due', r[3], key)
    elseif tonumber(redis.call('HGET', k, 'attempts')) >= tonumber(ARGV[6]) then
      bury(key, ARGV[7])
      out[#out + 1] = redis.call('HGETALL', k)
    else
      redis.call('HSET', k, 'owner', ARGV[3], 'lease_until', ARGV[4])
      redis.call('HINCRBY', k, 'attempts', 1)
      redis.call('ZADD', P .. 'in:due', ARGV[4], key)
      out[#out + 1] = redis.call('HGETALL', k)
    end
  end
end
return out
"""

# ARGV: prefix, now, key, owner, lease_until. Returns 1 if the owner's lease was extended.
INBOX_RENEW = _COMMON + """
local k = P .. 'in:' .. ARGV[3]
local r = redis.call('HMGET', k, 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= ARGV[4] then return 0 end
redis.call('HSET', k, 'lease_until', ARGV[5])
redis.call('ZADD', P .. 'in:due', ARGV[5], ARGV[3])
return 1
"""

# ARGV: prefix, now, key, then (appid, openid, body, rule) per reply. Returns new rows.
INBOX_FINISH = _COMMON + """
local k = P .. 'in:' .. ARGV[3]
if redis.call('HGET', k, 'state') ~= 'pending' then return {} end
redis.call('HSET', k, 'state', 'done')
redis.call('HDEL', k, 'owner', 'lease_until')
redis.call('ZREM', P .. 'in:due', ARGV[3])
return enqueue(4)
"""

# ARGV: prefix, now, then (appid, openid, body, rule) per reply. Returns new rows.
OUTBOX_ADD = _COMMON + """
return enqueue(3)
"""

# ARGV: prefix, now, key, owner, next_at, error. Returns 1 if it was the owner's.
INBOX_RETRY = _COMMON + """
local k = P .. 'in:' .. ARGV[3]
local r = redis.call('HMGET', k, 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= ARGV[4] then return 0 end
redis.call('HSET', k, 'lease_until', ARGV[5], 'error', ARGV[6])
redis.call('HDEL', k, 'owner')
redis.call('ZADD', P .. 'in:due', ARGV[5], ARGV[3])
return 1
"""

# ARGV: prefix, now, key, owner, error. Returns 1 if it was the owner's.
INBOX_DEAD = _COMMON + """
local r = redis.call('HMGET', P .. 'in:' .. ARGV[3], 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= ARGV[4] then return 0 end
bury(ARGV[3], ARGV[5])
return 1
"""

# ARGV: prefix, now, expires_at, px, keys... Dead entries back to pending, claimable now.
INBOX_REQUEUE = _COMMON + """
local n = 0
for i = 5, #ARGV do
  local k = P .. 'in:' .. ARGV[i]
  if redis.call('HGET', k, 'state') == 'dead' then
    redis.call('HSET', k, 'state', 'pending', 'attempts', 0, 'lease_until', NOW,
               'expires_at', ARGV[3])
    redis.call('PEXPIRE', k, ARGV[4])
    redis.call('ZREM', P .. 'in:dead', ARGV[i])
    redis.call('ZADD', P .. 'in:due', NOW, ARGV[i])
    n = n + 1
  end
end
return n
"""

# ARGV: prefix, before, batch size. Deletes up to one batch of dead entries.
INBOX_PURGE = _COMMON + """
local keys = redis.call('ZRANGEBYSCORE', P .. 'in:dead', '-inf', '(' .. NOW, 'LIMIT', 0, ARGV[3])
for _, key in ipairs(keys) do
  redis.call('DEL', P .. 'in:' .. key)
  redis.call('ZREM', P .. 'in:dead', key)
end
return #keys
"""

# ARGV: prefix, now, owner, lease_until, limit. Due users first from 'ready', then from
# 'leased' (their sender's lease ran out); one row per user, its oldest unfinished one.
OUTBOX_CLAIM = _COMMON + """
local limit = tonumber(ARGV[5])
local out = {}
local function take(zset)
  while #out < limit do
    local users = redis.call('ZRANGEBYSCORE', zset, '-inf', NOW, 'LIMIT', 0, limit - #out)
    if #users == 0 then return end
    for _, user in ipairs(users) do
      local head = redis.call('ZRANGE', queue_key(user), 0, 0)[1]
      if head then
        local key = row_key(head)
        local r = redis.call('HMGET', key, 'state', 'next_at')
        if not r[1] then
          redis.call('ZREM', queue_key(user), head)
        elseif tonumber(r[2]) <= now then
          set_state(head, r[1], 'sending')
          redis.call('HSET', key, 'state', 'sending', 'owner', ARGV[3], 'next_at', ARGV[4],
                     'updated_at', NOW)
          out[#out + 1] = redis.call('HGETALL', key)
        end
      end
      schedule(user)
    end
  end
end
take(P .. 'ob:ready')
take(P .. 'ob:leased')
return out
"""

# ARGV: prefix, now, id, owner, outcome (sent | retry | dead), next_at, errcode, errmsg.
OUTBOX_MARK = _COMMON + """
local id, outcome = ARGV[3], ARGV[5]
local key = row_key(id)
local r = redis.call('HMGET', key, 'state', 'owner', 'appid', 'openid')
if r[1] ~= 'sending' or r[2] ~= ARGV[4] then return 0 end
local user = r[3] .. ':' .. r[4]
local new = outcome == 'retry' and 'pending' or outcome
redis.call('HSET', key, 'state', new, 'updated_at', NOW)
redis.call('HDEL', key, 'owner')
set_state(id, 'sending', new)
if outcome ~= 'sent' then
  redis.call('HINCRBY', key, 'attempts', 1)
  set_optional(key, 'errcode', ARGV[7])
  set_optional(key, 'errmsg', ARGV[8])
end
if outcome == 'retry' then
  redis.call('HSET', key, 'next_at', ARGV[6])
else
  redis.call('ZADD', P .. 'ob:done', NOW, id)
  redis.call('ZREM', queue_key(user), id)
end
schedule(user)
return 1
"""

# ARGV: prefix, now, ids... Dead rows back to pending, due now, in their user's queue.
OUTBOX_REQUEUE = _COMMON + """
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = row_key(id)
  local r = redis.call('HMGET', key, 'state', 'appid', 'openid')
  if r[1] == 'dead' then
    local user = r[2] .. ':' .. r[3]
    redis.call('HSET', key, 'state', 'pending', 'next_at', NOW, 'updated_at', NOW)
    set_state(id, 'dead', 'pending')
    redis.call('ZREM', P .. 'ob:done', id)
    redis.call('ZADD', queue_key(user), id, id)
    schedule(user)
    n = n + 1
  end
end
return n
"""

# ARGV: prefix, before, batch size. Deletes up to one batch of sent/dead rows.
OUTBOX_PURGE = _COMMON + """
local ids = redis.call('ZRANGEBYSCORE', P .. 'ob:done', '-inf', '(' .. NOW, 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  local state = redis.call('HGET', row_key(id), 'state')
  if state then redis.call('ZREM', P .. 'ob:st:' .. state, id) end
  redis.call('DEL', row_key(id))
  redis.call('ZREM', P .. 'ob:all', id)
  redis.call('ZREM', P .. 'ob:done', id)
end
return #ids
"""
