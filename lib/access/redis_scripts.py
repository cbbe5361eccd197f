"""The Lua scripts the Redis store runs (`lib.access.redis_store`), each atomic on its server.

Every script's keys share one hash tag (a caller's), so a Redis Cluster runs it on one node;
the deployment's day has a tag of its own, and on a cluster is checked by `ADMIT_GLOBAL`.
"""

from __future__ import annotations

import hashlib

# Check every limit against the reserve and, when all can take it, count the request and hold
# the reserve on every account and the deployment's day: atomic, one round trip.
# KEYS: per account its minute hash (r: requests, t: tokens) and its day; then, optionally,
# the deployment's day. ARGV: accounts, reserve, global daily, minute TTL, day TTL, count (1)
# or only read (0), then per account rpm, tpm, daily (-1: none).
_ADMIT_SOURCE = """
local n, reserve, gdaily = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function full(limit, used)
  return limit >= 0 and (used >= limit or used + reserve > limit)
end
local req, tok, day = {}, {}, {}
for i = 1, n do
  local m = redis.call('HMGET', KEYS[2 * i - 1], 'r', 't')
  req[i], tok[i] = tonumber(m[1]) or 0, tonumber(m[2]) or 0
  day[i] = tonumber(redis.call('GET', KEYS[2 * i])) or 0
end
local gkey = KEYS[2 * n + 1]
local glob = 0
if gkey then glob = tonumber(redis.call('GET', gkey)) or 0 end
local verdict, refused = 0, -1
if full(gdaily, glob) then verdict = 1 else
  for i = 1, n do
    local a = 6 + 3 * (i - 1)
    local rpm, tpm, daily = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    if full(daily, day[i]) then verdict = 2
    elseif full(tpm, tok[i]) then verdict = 3
    elseif rpm >= 0 and req[i] >= rpm then verdict = 4 end
    if verdict > 0 then refused = i - 1; break end
  end
end
if verdict == 0 and ARGV[6] == '1' then
  -- A window is given its TTL by whoever creates it (here, or a settlement), so an EXPIRE is
  -- sent only where a count was 0: one call fewer per window for every later request.
  for i = 1, n do
    local fresh_minute, fresh_day = req[i] == 0, day[i] == 0
    req[i] = redis.call('HINCRBY', KEYS[2 * i - 1], 'r', 1)
    tok[i] = redis.call('HINCRBY', KEYS[2 * i - 1], 't', reserve)
    day[i] = redis.call('INCRBY', KEYS[2 * i], reserve)
    if fresh_minute then redis.call('EXPIRE', KEYS[2 * i - 1], ARGV[4]) end
    if fresh_day then redis.call('EXPIRE', KEYS[2 * i], ARGV[5]) end
  end
  if gkey then
    local fresh = glob == 0
    glob = redis.call('INCRBY', gkey, reserve)
    if fresh then redis.call('EXPIRE', gkey, ARGV[5]) end
  end
end
local out = {verdict, refused, glob}
for i = 1, n do
  local j = 3 * i
  out[j + 1] = req[i]
  out[j + 2] = tok[i]
  out[j + 3] = day[i]
end
return out
"""

# Add tokens (negative: give a reserve back) to every window; a give-back skips a window that
# has expired. KEYS: the accounts' minute hashes, then their days and the deployment's day.
# ARGV: delta, minute TTL, day TTL, accounts.
_SETTLE_FUNCTION = """
local function settle(first, delta, minute_ttl, day_ttl, minutes)
  for i = first, #KEYS do
    if delta >= 0 or redis.call('EXISTS', KEYS[i]) == 1 then
      -- A count that comes out at delta was 0 and may have been created here: give it its TTL
      -- (every other window already has one, from whoever created it).
      if i - first < minutes then
        if redis.call('HINCRBY', KEYS[i], 't', delta) == delta then
          redis.call('EXPIRE', KEYS[i], minute_ttl)
        end
      elseif redis.call('INCRBY', KEYS[i], delta) == delta then
        redis.call('EXPIRE', KEYS[i], day_ttl)
      end
    end
  end
end
"""
_ADD_TOKENS_SOURCE = (
    _SETTLE_FUNCTION
    + """
settle(1, tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 1
"""
)

# Add one finished request to its key's hour (lib/access/usage.py): its user by name while the
# day's set has room, else under the overflow value; and, riding along, settle its reservation
# (as _ADD_TOKENS does). KEYS: the hour's hash, the day's users, then the windows to settle
# (minute hashes first). ARGV: TTL, users kept, user ('' for none), overflow value, d
# prefixes, p metric pairs, delta, minute TTL, day TTL, minute hashes, then the d field
# prefixes and the p metric/value pairs.
_ADD_USAGE_SOURCE = (
    _SETTLE_FUNCTION
    + """
local ttl, cap, user = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local d, p = tonumber(ARGV[5]), tonumber(ARGV[6])
settle(3, tonumber(ARGV[7]), ARGV[8], ARGV[9], tonumber(ARGV[10]))
local prefixes = {}
for i = 1, d do prefixes[i] = ARGV[10 + i] end
if user ~= '' then
  if redis.call('SISMEMBER', KEYS[2], user) == 0 then
    if redis.call('SCARD', KEYS[2]) < cap then
      redis.call('SADD', KEYS[2], user)
      redis.call('EXPIRE', KEYS[2], ttl)
    else
      user = ARGV[4]
    end
  end
  prefixes[d + 1] = 'u|' .. user .. '|'
end
local first = 11 + d
for j = first, first + 2 * p - 1, 2 do
  for i = 1, #prefixes do
    redis.call('HINCRBY', KEYS[1], prefixes[i] .. ARGV[j], ARGV[j + 1])
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"""
)

# A Redis Cluster's second script (lib/access/redis_store.py): the deployment's day, in a slot
# of its own. Refuse when it cannot take the reserve; else, when counting, hold the reserve.
# KEYS: the deployment's day. ARGV: reserve, global daily, day TTL, count (1) or only read (0).
_ADMIT_GLOBAL_SOURCE = """
local reserve, gdaily = tonumber(ARGV[1]), tonumber(ARGV[2])
local glob = tonumber(redis.call('GET', KEYS[1])) or 0
if gdaily >= 0 and (glob >= gdaily or glob + reserve > gdaily) then return {1, glob} end
if ARGV[4] == '1' then
  local fresh = glob == 0
  glob = redis.call('INCRBY', KEYS[1], reserve)
  if fresh then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
end
return {0, glob}
"""


# A fallback breaker's failure (lib/access/breaker.py): count it, and at the threshold open
# the model until the given time, its count left one short so that one failure reopens it.
# KEYS: the breaker's hash. ARGV: model, threshold, open until, TTL.
_BREAKER_FAILED_SOURCE = """
local f = redis.call('HINCRBY', KEYS[1], 'f|' .. ARGV[1], 1)
if f >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'u|' .. ARGV[1], ARGV[3], 'f|' .. ARGV[1], tonumber(ARGV[2]) - 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return f
"""


class Script:
    """A Lua script and its SHA-1, which EVALSHA names it by."""

    __slots__ = ("lost", "sha", "source")

    def __init__(self, source: str, lost: str = "") -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.lost = lost  # what a lost reply of a script sent unawaited leaves undone


ADMIT = Script(_ADMIT_SOURCE)
ADMIT_GLOBAL = Script(_ADMIT_GLOBAL_SOURCE)
ADD_TOKENS = Script(_ADD_TOKENS_SOURCE, "a request's token count was not settled")
ADD_USAGE = Script(
    _ADD_USAGE_SOURCE, "a request was not added to the usage ledger, nor its tokens settled"
)
ALL = (ADMIT, ADMIT_GLOBAL, ADD_TOKENS, ADD_USAGE)
# Sent with EVAL, not loaded on each connection (ALL): a breaker's failure is rare.
BREAKER_FAILED = Script(_BREAKER_FAILED_SOURCE)
