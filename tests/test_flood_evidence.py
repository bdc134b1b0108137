"""Evidence and alerts survive a many-address flood; an audit store outage is alerted (issue 29, 12 and 13).

Real servers on loopback, a real webhook receiver (slow on purpose, as a busy chat service is), a real
redis-server stopped and started again for the outage.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from support import (
    Server,
    Venv,
    client_key,
    jsonrpc,
    post_mcp,
    post_mcp_async,
    read_env_file,
    running_server,
    wait_for,
)
from support.redis import start_redis
from support.tooling import all_events

CALL = jsonrpc("tools/call", {"name": "whoami", "arguments": {}})
INITIALIZE = jsonrpc(
    "initialize",
    {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
)


def served(response: httpx2.Response) -> bool:
    return response.status_code == 200 and not response.json().get("result", {}).get("isError", True)


def key() -> str:
    return "mcp_" + secrets.token_urlsafe(32)


class SlowWebhook:
    """A loopback webhook that takes `delay` seconds per alert and keeps every body it got."""

    def __init__(self, delay: float) -> None:
        self.alerts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                time.sleep(delay)
                receiver.alerts.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"

    def __enter__(self) -> SlowWebhook:
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()

    def named(self, event: str) -> list[dict[str, Any]]:
        return [alert for alert in list(self.alerts) if alert.get("event") == event]


@pytest.fixture(scope="module")
def project(rendered: Any) -> Path:
    return rendered("http_none")


def flood_env(project: Path, **extra: str) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_TRUSTED_PROXIES": "127.0.0.1",  # so one test speaks for many addresses
        "MCP_RATE_LIMIT": "100000/minute",
        "MCP_SECURITY_EVENTS_URL": "memory://",
        **extra,
    }


async def wrong_keys_from(server: Server, addresses: list[str], each: int) -> None:
    async with httpx2.AsyncClient(timeout=60, limits=httpx2.Limits(max_connections=50)) as http:
        limiter = anyio.Semaphore(50)

        async def one(address: str) -> None:
            async with limiter:
                await post_mcp_async(http, server, CALL, key(), address)

        async with anyio.create_task_group() as group:
            for address in addresses:
                for _ in range(each):
                    group.start_soon(one, address)


# ---- 12: the real attacker's block survives a flood of addresses -------------------------------------------


def test_a_flood_of_addresses_does_not_evict_the_real_attackers_block(project: Path, venv: Venv) -> None:
    env = flood_env(project, MCP_AUTH_FAILURE_THRESHOLD="3", MCP_SECURITY_EVENTS_MAX_ANONYMOUS_ROWS="1000")
    attacker = "203.0.113.66"
    with running_server(venv, project, env) as server:
        anyio.run(wrong_keys_from, server, [attacker], 3)
        # 40 more addresses, 30 failing requests each: 1,200 anonymous events against a cap of 1,000.
        anyio.run(wrong_keys_from, server, [f"198.51.100.{n}" for n in range(40)], 30)
        blocks = all_events(server, env["MCP_ADMIN_API_KEYS"], event="client_blocked", severity="high")
        first_failures = all_events(server, env["MCP_ADMIN_API_KEYS"], event="authentication_failed")
    assert attacker in {event["identifier"] for event in blocks}
    assert attacker in {event["identifier"] for event in first_failures}  # its first event of the window


def test_a_flood_of_alerts_costs_one_alert_and_the_distinct_one_arrives(project: Path, venv: Venv) -> None:
    alice, bob = key(), key()
    with SlowWebhook(delay=0.1) as webhook:
        env = flood_env(
            project,
            MCP_API_KEYS=f"{alice},{bob}",
            MCP_AUTH_FAILURE_THRESHOLD="1",
            MCP_ALERT_WEBHOOK_URL=webhook.url,
            MCP_SECURITY_EVENTS_PER_SOURCE="100000/5 seconds",  # the alerts' coalescing window too
        )
        with running_server(venv, project, env) as server:
            # 1,100 addresses, each blocked at its first failure: 1,100 client_blocked (high) events.
            anyio.run(wrong_keys_from, server, [f"10.{n // 250}.{n % 250}.1" for n in range(1100)], 1)
            # Then something else: bob uses alice's session (authorization_denied, high).
            session = post_mcp(server, INITIALIZE, alice).headers["mcp-session-id"]
            stolen = post_mcp(server, jsonrpc("ping", id=2), bob, {"Mcp-Session-Id": session})
            assert stolen.status_code == 404
            denied = wait_for(lambda: webhook.named("authorization_denied"), 30, "the distinct alert")
            summaries = wait_for(lambda: webhook.named("alerts_coalesced"), 30, "the flood's summary")
            time.sleep(6)  # any later window's summary
            blocked = webhook.named("client_blocked")
            summaries = webhook.named("alerts_coalesced")
    assert len(denied) == 1 and denied[0]["details"]["reason"] == "session of another principal"
    assert len(blocked) <= 3  # one per 5-second window the flood spanned
    flood = [s for s in summaries if s["kind"] == "client_blocked"]
    assert len(blocked) + sum(s["count"] for s in flood) == 1100
    assert all(len(s["identifiers"]) <= 20 for s in flood)


# ---- 13: an audit store outage is alerted, once, and its end too -------------------------------------------


def test_an_audit_store_outage_alerts_once_and_its_recovery_once(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    redis = start_redis(tmp_path)
    try:
        with SlowWebhook(delay=0) as webhook:
            env = flood_env(project, MCP_SECURITY_EVENTS_URL=redis.url, MCP_ALERT_WEBHOOK_URL=webhook.url)
            token = client_key(env)
            with running_server(venv, project, env) as server:
                assert served(post_mcp(server, CALL, token))
                redis.stop()
                down = [served(post_mcp(server, CALL, token)) for _ in range(5)]
                for _ in range(3):
                    time.sleep(1.2)  # past the store's retry pause: each one tries the store again
                    down.append(served(post_mcp(server, CALL, token)))
                wait_for(lambda: webhook.named("audit_store_down"), 20, "the outage alert")
                redis.start()
                back = wait_for(lambda: served(post_mcp(server, CALL, token)), 20, "the store to be back")
                for _ in range(3):
                    assert served(post_mcp(server, CALL, token))
                wait_for(lambda: webhook.named("audit_store_recovered"), 20, "the recovery alert")
                time.sleep(1)
    finally:
        redis.stop()
    assert back and not any(down), down
    assert len(webhook.named("audit_store_down")) == 1
    assert webhook.named("audit_store_down")[0]["severity"] == "critical"
    assert len(webhook.named("audit_store_recovered")) == 1
