"""Fixed-window rate limits in Redis, shared by every API process and worker.

Several limits are checked and counted together in one Lua script: a request is refused by
the first limit it would break, and then counts against none of them (a refused request must
not eat the budget of the limits it did not break, nor lengthen its own wait)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from app.core.metrics import RATE_LIMITED

# KEYS: the counters; ARGV: for each, its limit then its window in ms.
# Returns {0, 0, 0} when allowed (all counted), or {1, ms until the fullest broken window
# resets, the 1-based index of that limit}.
_SCRIPT = """
local wait = -1
local broken = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local used = tonumber(redis.call('GET', key) or '0')
  if used >= limit then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      -- No counter (a limit of 0), or one that lost its expiry: a whole window from now,
      -- and such a counter gets its expiry back so that it cannot refuse forever.
      ttl = tonumber(ARGV[2 * i])
      if used > 0 then redis.call('PEXPIRE', key, ttl) end
    end
    if ttl > wait then wait = ttl; broken = i end
  end
end
if wait >= 0 then return {1, wait, broken} end
for i, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 or redis.call('PTTL', key) == -1 then
    redis.call('PEXPIRE', key, ARGV[2 * i])
  end
end
return {0, 0, 0}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    limit: int
    window_seconds: int
    # What its refusals are counted as (`sms_rate_limited_total{limit}`): never the key,
    # which names a user, a number or an address.
    name: str = "unnamed"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_seconds: int = 0


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str = "ratelimit:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_SCRIPT)

    async def hit(self, limits: list[Limit]) -> Verdict:
        if not limits:
            return Verdict(True)
        keys = [self._prefix + limit.key for limit in limits]
        args: list[int] = []
        for limit in limits:
            args += [limit.limit, limit.window_seconds * 1000]
        refused, wait_ms, broken = await self._script(keys=keys, args=args)
        if not refused:
            return Verdict(True)
        RATE_LIMITED.labels(limits[int(broken) - 1].name).inc()
        return Verdict(False, max(1, -(-int(wait_ms) // 1000)))
