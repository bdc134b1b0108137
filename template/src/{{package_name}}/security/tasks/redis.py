"""The Redis task store (`redis://host:port/db`): shared by every replica.

A task created on one replica is read, answered and cancelled from any other: each change is an
optimistic transaction (WATCH the task, change it, MULTI/EXEC; retried if another replica wrote it
first). The replica running the work reads the task back every moment, so a cancel made anywhere stops
it there. Live tasks are counted with one set per principal and one for all; settled tasks wait in a
sorted set until their TTL ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from .store import ChangingStore, Task, TaskStoreConfigError

T = TypeVar("T")
PREFIX = "mcp:tasks:"
LIVE = PREFIX + "live"
SETTLED = PREFIX + "settled"


def _key(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}"


def _live_of(principal: str) -> str:
    return f"{LIVE}:{principal}"


def _encode(task: Task) -> str:
    return json.dumps(asdict(task), separators=(",", ":"))


def _decode(raw: bytes | str) -> Task:
    return Task(**json.loads(raw))


class RedisTaskStore(ChangingStore):
    def __init__(self, url: str) -> None:
        where = url.split("@")[-1].split("/")[0]  # host:port, without a password
        try:
            with redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0) as client:
                client.ping()
            self._redis = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        except (RedisError, ValueError, OSError) as exc:
            raise TaskStoreConfigError(
                f"MCP_TASKS_URL: cannot reach the Redis task store at {where} ({type(exc).__name__}); "
                "start Redis there or point the setting at a reachable server"
            ) from None

    async def _change(self, task_id: str, change: Callable[[Task], T], default: T) -> T:
        key = _key(task_id)
        async with self._redis.pipeline(transaction=True) as transaction:
            pipe: Any = transaction  # redis-py leaves watch/multi untyped
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        await pipe.unwatch()
                        return default
                    task = _decode(raw)
                    was_live = task.live
                    outcome = change(task)
                    pipe.multi()
                    pipe.set(key, _encode(task))
                    if was_live and not task.live:
                        pipe.srem(LIVE, task.id)
                        pipe.srem(_live_of(task.principal), task.id)
                        pipe.zadd(SETTLED, {task.id: task.updated_at})
                    await pipe.execute()
                    return outcome
                except WatchError:
                    continue  # another replica changed it first: read it again

    async def create(self, task: Task) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_key(task.id), _encode(task))
            pipe.sadd(LIVE, task.id)
            pipe.sadd(_live_of(task.principal), task.id)
            await pipe.execute()

    async def get(self, task_id: str) -> Task | None:
        raw = await self._redis.get(_key(task_id))
        return _decode(raw) if raw is not None else None

    async def count_live(self, principal: str | None = None) -> int:
        count: int = await self._redis.scard(LIVE if principal is None else _live_of(principal))
        return count

    async def overdue(self, now: float) -> list[str]:
        found = []
        for member in await self._redis.smembers(LIVE):  # at most MCP_MAX_TASKS
            task = await self.get(member.decode() if isinstance(member, bytes) else str(member))
            if task is not None and task.live and 0 < task.deadline < now:
                found.append(task.id)
        return found

    async def expire(self, before: float) -> list[Task]:
        gone: list[Task] = []
        for task_id in await self._redis.zrangebyscore(SETTLED, "-inf", before, start=0, num=500):
            name = task_id.decode() if isinstance(task_id, bytes) else str(task_id)
            raw = await self._redis.getdel(_key(name))
            if await self._redis.zrem(SETTLED, name) and raw is not None:
                gone.append(_decode(raw))
        return gone

    async def aclose(self) -> None:
        await self._redis.aclose()
