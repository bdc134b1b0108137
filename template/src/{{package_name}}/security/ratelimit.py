"""Rate limits with the `limits` library: memory for one process, Redis so replicas share one limit.

If the storage cannot answer, the limiter raises RateLimitUnavailableError: callers refuse
the request (503 or an error result) instead of letting traffic through unlimited. The Redis
client reconnects by itself, so service comes back when Redis does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

# Set on an HTTP request's state once the perimeter has counted it against its principal,
# so the guard does not count the same request twice.
PRINCIPAL_COUNTED = "principal_rate_limited"


class RateLimitUnavailableError(RuntimeError):
    """The rate-limit storage did not answer; the request must be refused."""


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


def _decision(allowed: bool, item: RateLimitItem, reset_at: float, remaining: int) -> Decision:
    # reset_at is when the oldest hit in the window expires, i.e. when a slot frees up.
    reset_after = max(1, math.ceil(reset_at - time.time()))
    return Decision(allowed, item.amount, max(0, remaining), reset_after)


def _storage_uri(url: str) -> str:
    return url if url.startswith("async+") else "async+" + url


class RateLimiter:
    """A moving-window limiter: exact, with no burst at a window boundary."""

    def __init__(self, storage_url: str) -> None:
        options: dict[str, Any] = {}
        if not storage_url.startswith("memory://"):
            # redis-py (a declared dependency; limits defaults to coredis), and short timeouts so a
            # hung Redis turns into refusals within seconds instead of piling up requests.
            options = {"implementation": "redispy", "socket_timeout": 2, "socket_connect_timeout": 2}
        storage = storage_from_string(_storage_uri(storage_url), **options)
        if not isinstance(storage, Storage):
            raise ValueError("MCP_RATE_LIMIT_STORAGE needs an async storage")
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(self._storage)

    @staticmethod
    def parse(limit: str) -> RateLimitItem:
        return parse(limit)

    async def hit(self, item: RateLimitItem, *keys: str) -> Decision:
        """Take one slot if there is one (atomically, also in Redis)."""
        try:
            allowed = await self._strategy.hit(item, *keys)
            reset_at, remaining = await self._strategy.get_window_stats(item, *keys)
        except Exception as exc:
            raise RateLimitUnavailableError(f"rate-limit storage unavailable ({type(exc).__name__})") from exc
        return _decision(allowed, item, reset_at, remaining)

    async def peek(self, item: RateLimitItem, *keys: str) -> Decision:
        """Whether a slot is free, without taking it."""
        try:
            reset_at, remaining = await self._strategy.get_window_stats(item, *keys)
        except Exception as exc:
            raise RateLimitUnavailableError(f"rate-limit storage unavailable ({type(exc).__name__})") from exc
        return _decision(remaining > 0, item, reset_at, remaining)

    async def ping(self) -> None:
        try:
            ok = await self._storage.check()
        except Exception as exc:
            raise RateLimitUnavailableError(f"rate-limit storage unavailable ({type(exc).__name__})") from exc
        if not ok:
            raise RateLimitUnavailableError("rate-limit storage unavailable")
