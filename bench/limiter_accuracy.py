"""Rate-limit accuracy under 200 concurrent clients: over-admission must be 0.

    uv run python bench/limiter_accuracy.py [--clients 200] [--limit 5] [--per-client 15]

Real servers, real requests (tools/call whoami over Streamable HTTP), 200 concurrent connections.
Three cases, each with memory:// storage on one server and with Redis shared by two replicas
(requests alternate between them):
  principals  200 clients, each its own key, each sending 3x the limit at once
  shared key  200 clients sharing one key, each sending 2 requests at once
  addresses   200 client addresses (X-Forwarded-For via a trusted proxy), wrong key, 3x the limit each
Over-admission is the number of requests let through beyond the limit; under-admission is the
number refused although the limit had room. Both must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from limiter_support import RawHttp, machine, post_request, project, workdir, write_subsection
from support import Server, Venv, read_env_file, running_server
from support.redis import RedisServer

BODY = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
).encode()


def key(case: str, index: int) -> str:
    return f"mcp_bench-{case}-{index:04d}-0123456789abcdef"


@contextmanager
def servers(venv: Venv, dest: Path, env: dict[str, str], count: int, log_dir: Path) -> Iterator[list[Server]]:
    with ExitStack() as stack:
        yield [stack.enter_context(running_server(venv, dest, env, log_dir=log_dir)) for _ in range(count)]


def run_case(
    ports: list[int],
    clients: int,
    per_client: int,
    headers_of: object,
    allowed_status: int,
    limit: int,
    connections: int,
) -> dict[str, float]:
    requests: list[tuple[int, bytes]] = []
    owner: list[int] = []
    for client in range(clients):
        for n in range(per_client):
            port = ports[(client + n) % len(ports)]
            requests.append((port, post_request(port, BODY, headers_of(client))))  # type: ignore[operator]
            owner.append(client)
    started = time.perf_counter()
    statuses = asyncio.run(RawHttp().run(requests, connections))
    elapsed = time.perf_counter() - started
    admitted = [0] * clients
    for client, status in zip(owner, statuses, strict=True):
        if status == allowed_status:
            admitted[client] += 1
        elif status != 429:
            raise SystemExit(f"unexpected status {status}")
    return {
        "requests": len(requests),
        "admitted": sum(admitted),
        "expected": clients * min(limit, per_client),
        "over": sum(max(0, a - limit) for a in admitted),
        "under": sum(max(0, min(limit, per_client) - a) for a in admitted),
        "rate": len(requests) / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--per-client", type=int, default=15)
    args = parser.parse_args()
    clients, limit = args.clients, args.limit
    rows: list[str] = []
    worst = 0
    with workdir() as tmp:
        venv, dest = project(Path(tmp))
        keys = [key("p", i) for i in range(clients)] + [key("shared", 0)]
        base = {
            **read_env_file(dest),
            "MCP_API_KEYS": ",".join(keys),
            "MCP_RATE_LIMIT": f"{limit}/minute",
            "MCP_TRUSTED_PROXIES": "127.0.0.1",
            "MCP_SECURITY_EVENTS_URL": "memory://",
            "MCP_LOG_LEVEL": "WARNING",
        }
        cases = {
            "principals": (
                clients,
                args.per_client,
                lambda c: {"Authorization": f"Bearer {keys[c]}"},
                200,
                limit,
            ),
            "shared key": (clients, 2, lambda c: {"Authorization": f"Bearer {keys[-1]}"}, 200, limit),
            "addresses": (
                clients,
                args.per_client,
                lambda c: {
                    "Authorization": "Bearer mcp_wrong-key-0123456789abcdef",
                    "X-Forwarded-For": f"10.9.{c >> 8}.{c & 255}",
                },
                401,
                limit,
            ),
        }
        redis_server = RedisServer(Path(tmp) / "redis")
        redis_server.start()
        try:
            for storage, replicas in (("memory://", 1), (redis_server.url, 2)):
                label = "memory, 1 server" if replicas == 1 else "Redis, 2 replicas"
                with servers(
                    venv, dest, {**base, "MCP_RATE_LIMIT_STORAGE": storage}, replicas, Path(tmp)
                ) as running:
                    ports = [server.port for server in running]
                    for name, (n, per, headers_of, ok, lim) in cases.items():
                        if name == "shared key":
                            # One key shared by all: the limit is for the key, not for each client.
                            figures = run_case(ports, n, per, headers_of, ok, lim * n, clients)
                            figures["expected"] = lim
                            figures["over"] = max(0, figures["admitted"] - lim)
                            figures["under"] = max(0, lim - figures["admitted"])
                        else:
                            figures = run_case(ports, n, per, headers_of, ok, lim, clients)
                        worst = max(worst, int(figures["over"]), int(figures["under"]))
                        line = (
                            f"| {label} | {name} | {figures['requests']:.0f} | {figures['expected']:.0f} | "
                            f"{figures['admitted']:.0f} | {figures['over']:.0f} | {figures['under']:.0f} | "
                            f"{figures['rate']:,.0f} |"
                        )
                        print(line)
                        rows.append(line)
                if replicas == 1:
                    continue
                redis.Redis.from_url(redis_server.url).flushall()
        finally:
            redis_server.stop()
    verdict = "PASS" if worst == 0 else "FAIL"
    print(f"{verdict}: over- and under-admission {'0' if worst == 0 else 'NOT 0'}")
    write_subsection(
        "Accuracy under 200 concurrent clients",
        f"`uv run python bench/limiter_accuracy.py` on {machine()}.\n\n"
        f"`MCP_RATE_LIMIT={limit}/minute`, {clients} concurrent connections, tools/call requests. "
        "*principals*: each client has its own key and sends 3x the limit at once; *shared key*: all clients "
        "use one key, 2 requests each; *addresses*: each client has its own `X-Forwarded-For` address and a "
        "wrong key (the pre-authentication limit; admitted = answered 401 rather than 429).\n\n"
        "| storage | case | requests | limit allows | admitted | over-admitted | under-admitted "
        "| requests/s |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\nOver- and under-admission must be 0: "
        f"**{verdict}**.",
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
