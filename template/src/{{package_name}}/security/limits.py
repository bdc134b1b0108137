"""Rate limits with the `limits` library: memory for one process, Redis so replicas share one limit.

If the storage cannot answer, the limiter raises RateLimitUnavailableError: callers refuse
the request (503 or an error result) instead of letting traffic through unlimited. The Redis
client reconnects by itself, so service comes back when Redis does.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.aio.strategies import RateLimiter as RateLimiterStrategy
from limits.storage import storage_from_string

from ..server.sdk import MEMORY_STORAGE_METHODS, MEMORY_STORAGE_STATE
from .limits_redis import RedisDecisions

# Set on an HTTP request's state once the perimeter has counted it against its principal,
# so the guard does not count the same request twice.
PRINCIPAL_COUNTED = "principal_rate_limited"


class RateLimitUnavailableError(RuntimeError):
    """The rate-limit storage did not answer; the request must be refused."""


class RateLimitConfigError(ValueError):
    """MCP_RATE_LIMIT_STORAGE names a store that cannot be reached at start-up."""


def ensure_reachable(storage_url: str) -> None:
    """Start-up check, as for the audit store: a Redis that does not answer PING stops start-up,
    instead of a server that refuses every request with 503."""
    if storage_url.startswith("memory://"):
        return
    import redis

    where = urlsplit(storage_url)
    try:
        with redis.Redis.from_url(
            storage_url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        ) as client:
            client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise RateLimitConfigError(
            f"MCP_RATE_LIMIT_STORAGE: cannot reach Redis at {where.hostname}:{where.port or 6379} "
            f"({type(exc).__name__}); start Redis there or point the setting at a reachable server"
        ) from None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until a slot frees up

    @property
    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_after)
        return headers


def _decision(allowed: bool, reset_at: float, remaining: int, item: RateLimitItem) -> Decision:
    # reset_at is when the oldest hit in the window expires, i.e. when a slot frees up.
    reset_after = max(1, math.ceil(reset_at - time.time()))
    return Decision(allowed, item.amount, max(0, remaining), reset_after)


def _storage_uri(url: str) -> str:
    return url if url.startswith("async+") else "async+" + url


Window = Literal["moving", "fixed"]
REDIS_CONNECTIONS = 100  # per process
REDIS_TIMEOUT_SECONDS = 2


class _MemoryStorage(MemoryStorage):
    """limits' in-process storage, sweeping expired keys at most once a second.

    Upstream starts a sweep of every key after each hit once the last sweep is done: with
    100,000 client addresses in the window that is a scan of 100,000 keys per request. Decisions
    do not depend on the sweep (each read ignores expired hits); it only frees memory, so a key
    lives at most one window plus a second.
    """

    relies_on = MEMORY_STORAGE_METHODS + MEMORY_STORAGE_STATE  # limits' internals (server/sdk.py)
    SWEEP_SECONDS = 1.0
    _last_sweep = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # the upstream hook, run on every hit
        now = time.monotonic()
        if now - self._last_sweep >= self.SWEEP_SECONDS:
            self._last_sweep = now
            await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Upstream's fixed-window count, without its asyncio.Lock per key: nothing under that lock
        awaits, so no other task could interleave anyway, and the lock (with its dict) was most of the
        memory a client address costs (the template's docs/benchmarks.md)."""
        await self.get(key)
        await self._MemoryStorage__schedule_expiry()
        self.storage[key] += amount
        if self.storage[key] == amount:
            self.expirations[key] = time.time() + expiry
        return self.storage.get(key, amount)

    async def _MemoryStorage__expire_events(self) -> None:  # the upstream sweep
        """Upstream's sweep, without its worker-thread hop per key: the bisect takes microseconds, the
        hop made a request for that key wait for a thread switch, up to 5 ms (the template's
        docs/benchmarks.md). With no await inside, no request runs while it does, so it needs none of the key
        locks."""
        now = time.time()
        for key, events in list(self.events.items()):
            kept = events[: bisect.bisect_left(events, -now, key=lambda event: -event.expiry)]
            if kept:
                self.events[key] = kept
            else:
                self.events.pop(key, None)
                self.locks.pop(key, None)
        for key, expiry in list(self.expirations.items()):
            if expiry <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)


class RateLimiter:
    """Two strategies from `limits` over one storage, both exact under concurrency.

    "moving" (the default) allows N hits in any period of the window's length, with no burst at a
    boundary; it keeps one timestamp per hit, so it suits keys that are few (principals, tools).
    "fixed" allows N hits per window starting at a key's first hit; it keeps one counter per key,
    so it suits keys an attacker can mint by the hundred thousand (client addresses).
    """

    def __init__(self, storage_url: str) -> None:
        storage: Storage
        # Redis: one script call per decision (limits_redis.py); memory: limits' strategies, no round trip.
        self._redis: RedisDecisions | None = None
        if storage_url.startswith("memory://"):
            storage = _MemoryStorage()
        else:
            # redis-py (a declared dependency; limits defaults to coredis) with a blocking pool: past
            # REDIS_CONNECTIONS concurrent calls, a request waits for a connection instead of failing.
            # Short timeouts turn a hung Redis into refusals within seconds, not a pile-up of requests.
            from redis.asyncio import BlockingConnectionPool

            pool = BlockingConnectionPool.from_url(
                storage_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            options: dict[str, Any] = {"implementation": "redispy", "connection_pool": pool}
            found = storage_from_string(_storage_uri(storage_url), **options)
            if not isinstance(found, Storage):
                raise ValueError("MCP_RATE_LIMIT_STORAGE needs an async storage")
            storage = found
            from redis.asyncio import Redis

            self._redis = RedisDecisions(Redis(connection_pool=pool))
        self._storage = storage
        self._strategies: dict[Window, RateLimiterStrategy] = {
            "moving": MovingWindowRateLimiter(storage),
            "fixed": FixedWindowRateLimiter(storage),
        }

    @staticmethod
    def parse(limit: str) -> RateLimitItem:
        item = parse(limit)
        if item.amount < 1:
            raise ValueError(f"rate limit {limit!r} allows no call at all; write at least 1 per period")
        return item

    async def hit(self, item: RateLimitItem, *keys: str, window: Window = "moving") -> Decision:
        """Take one slot if there is one (atomically, also in Redis)."""
        strategy = self._strategies[window]
        try:
            if self._redis is not None:
                return _decision(
                    *await self._redis.decide(item, keys, moving=window == "moving", take=True), item
                )
            allowed = await strategy.hit(item, *keys)
            reset_at, remaining = await strategy.get_window_stats(item, *keys)
        except Exception as exc:
            raise RateLimitUnavailableError(f"rate-limit storage unavailable ({type(exc).__name__})") from exc
        return _decision(allowed, reset_at, remaining, item)

    async def take(self, item: RateLimitItem, *keys: str, window: Window = "moving") -> Decision | None:
        """Take one slot if there is one: None if taken, else the refusal's figures. For callers that send no
        RateLimit headers: an allowed call costs one storage call instead of two."""
        strategy = self._strategies[window]
        try:
            if self._redis is not None:
                allowed, reset_at, remaining = await self._redis.decide(
                    item, keys, moving=window == "moving", take=True
                )
                return None if allowed else _decision(False, reset_at, remaining, item)
            if await strategy.hit(item, *keys):
                return None
            reset_at, remaining = await strategy.get_window_stats(item, *keys)
        except Exception as exc:
            raise RateLimitUnavailableError(f"rate-limit storage unavailable ({type(exc).__name__})") from exc
        return _decision(False, reset_at, remaining, item)

    async def peek(self, item: RateLimitItem, *keys: str, window: Window = "moving") -> Decision:
        """Whether a slot is free, without taking it (and without storing anything for a new key)."""
        try:
            if self._redis is not None:
                return _decision(
                    *await self._redis.decide(item, keys, moving=window == "moving", take=False), item
                )
            reset_at, remaining = await self._strategies[window].get_window_stats(item, *keys)
        except Exception as exc:
            raise RateLimitUnavailableError(f"rate-limit storage unavailable ({type(exc).__name__})") from exc
        return _decision(remaining > 0, reset_at, remaining, item)

    async def ping(self) -> None:
        try:
            ok = await self._storage.check()
        except Exception as exc:
            raise RateLimitUnavailableError(f"rate-limit storage unavailable ({type(exc).__name__})") from exc
        if not ok:
            raise RateLimitUnavailableError("rate-limit storage unavailable")
