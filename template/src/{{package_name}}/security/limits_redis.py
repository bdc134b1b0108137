"""One Redis round trip per rate-limit decision: the slot taken (or not) and the window's figures together.

limits' strategies take two calls for a decision with its figures (the acquire, then the window's
stats) and two for a fixed window's figures (GET, then TTL). These scripts do the same reads and writes
on the same keys, in limits' own layout (`LIMITS:<item key>`: a list of hit timestamps, newest first, for
a moving window; a counter with a TTL for a fixed one), so a replica still on limits' calls shares them.
"""

from __future__ import annotations

import time
from typing import Any

from limits import RateLimitItem

# KEYS: the list; ARGV: now, limit, expiry (s), take (1) or look (0). Returns allowed, the oldest hit in
# the window, the hits in it (after this one, if taken).
_MOVING = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local allowed = 1
local entry = redis.call('lindex', KEYS[1], limit - 1)
if entry and tonumber(entry) >= now - expiry then allowed = 0 end
if allowed == 1 and ARGV[4] == '1' then
  redis.call('lpush', KEYS[1], ARGV[1])
  redis.call('ltrim', KEYS[1], 0, limit - 1)
  redis.call('expire', KEYS[1], expiry)
end
local low, high, index = 0, redis.call('llen', KEYS[1]) - 1, -1
while low <= high do
  local middle = math.floor((low + high) / 2)
  local value = tonumber(redis.call('lindex', KEYS[1], middle))
  if value and value >= now - expiry then
    index = middle
    low = middle + 1
  else
    high = middle - 1
  end
end
if index < 0 then return {allowed, ARGV[1], 0} end
return {allowed, redis.call('lindex', KEYS[1], index), index + 1}
"""
# KEYS: the counter; ARGV: limit, expiry (s), take (1) or look (0). Returns allowed, the count, its TTL.
# A hit is counted even past the limit, as limits' fixed window counts it.
_FIXED = """
local limit = tonumber(ARGV[1])
local count
local allowed
if ARGV[3] == '1' then
  count = redis.call('incrby', KEYS[1], 1)
  if count == 1 then redis.call('expire', KEYS[1], ARGV[2]) end
  allowed = count <= limit
else
  count = tonumber(redis.call('get', KEYS[1]) or '0')
  allowed = count < limit
end
return {allowed and 1 or 0, count, redis.call('ttl', KEYS[1])}
"""
PREFIX = "LIMITS:"  # limits' RedisStorage.PREFIX, and its separator


class RedisDecisions:
    """The two scripts, on a client that shares the limiter's connection pool."""

    def __init__(self, client: Any) -> None:
        self._moving = client.register_script(_MOVING)
        self._fixed = client.register_script(_FIXED)

    async def decide(
        self, item: RateLimitItem, keys: tuple[str, ...], *, moving: bool, take: bool
    ) -> tuple[bool, float, int]:
        """(allowed, when a slot frees up as a UNIX time, slots remaining): one script call."""
        key = PREFIX + item.key_for(*keys)
        expiry = item.get_expiry()
        if moving:
            now = time.time()
            allowed, oldest, hits = await self._moving(
                keys=[key], args=[repr(now), item.amount, expiry, int(take)]
            )
            return bool(allowed), float(oldest) + expiry, item.amount - int(hits)
        allowed, count, ttl = await self._fixed(keys=[key], args=[item.amount, expiry, int(take)])
        return bool(allowed), max(int(ttl), 0) + time.time(), max(0, item.amount - int(count))
