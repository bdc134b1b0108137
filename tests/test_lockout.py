"""Honest users never locked out, attackers never helped (issue 29, items 7 to 10), against real servers.

A blocked address gets one 429 for every credential it has not already used successfully, right or
wrong, and nothing it sends is verified meanwhile (no key lookup, signature check or introspection call);
a request without a credential never counts as a failed login and always gets the 401 challenge; a
credential that makes verification raise anything is an invalid_token 401; raw keys that are easy to
guess stop start-up and `check`. A principal at its session cap ends its own least recently used session
instead of being refused, and concurrent initializes cannot open more than the cap.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from support import Server, Venv, jsonrpc, package_of, post_mcp, post_mcp_async, read_env_file, running_server
from support.perimeter import EventWatch, assert_security_headers
from support.projects import serving_with_issuer

CALL = jsonrpc("tools/list")
WEAK_KEY = "Welcome2026!Spring"  # found by a 361-word dictionary while its address was blocked


def key() -> str:
    return "mcp_" + secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def project(rendered: Any) -> Path:
    return rendered("http_none")


@pytest.fixture(scope="module")
def oauth_project(rendered: Any) -> Path:
    return rendered("oauth")


def blocking_env(project: Path, **extra: str) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_TRUSTED_PROXIES": "127.0.0.1",  # so one test speaks for several addresses
        "MCP_AUTH_FAILURE_THRESHOLD": "3",
        "MCP_AUTH_BLOCK_SECONDS": "600",
        "MCP_RATE_LIMIT": "100000/minute",
        "MCP_SECURITY_EVENTS_URL": "memory://",
        "MCP_SECURITY_EVENTS_PER_SOURCE": "100000/minute",
        **extra,
    }


def same_but_seconds(text: str) -> str:
    return re.sub(r"\d+", "N", text)  # Retry-After counts down between two answers


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


# ---- 7: guessable keys are refused; a blocked address is told nothing --------------------------------------


@pytest.mark.parametrize("variable", ["MCP_API_KEYS", "MCP_ADMIN_API_KEYS"])
def test_a_guessable_raw_key_stops_check_and_serve(project: Path, venv: Venv, variable: str) -> None:
    command, _ = package_of(project)
    env = {**read_env_file(project), variable: WEAK_KEY}
    checked = venv.run(venv.bin(command), "check", cwd=project, env=env, timeout=120)
    served = venv.run(venv.bin(command), "serve", "--transport", "http", cwd=project, env=env, timeout=120)
    for result in (checked, served):
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert f"{variable} entry 1 is too easy to guess" in output and "keygen" in output, output
        assert WEAK_KEY not in output and "Traceback" not in output
    helped = venv.run(venv.bin(command), "keygen", "--help", cwd=project, env=env)
    assert "128 bits" in " ".join(helped.stdout.split())


def test_a_random_raw_key_is_accepted(project: Path, venv: Venv) -> None:
    command, _ = package_of(project)
    env = {**read_env_file(project), "MCP_API_KEYS": secrets.token_hex(16)}  # 128 random bits in hex
    checked = venv.run(venv.bin(command), "check", cwd=project, env=env, timeout=120)
    assert "too easy to guess" not in checked.stdout + checked.stderr


def test_a_blocked_address_gets_the_same_429_for_a_right_and_a_wrong_key(project: Path, venv: Venv) -> None:
    colleague, newcomer = key(), key()
    env = blocking_env(project, MCP_API_KEYS=f"{colleague},{newcomer}")
    office = from_address("198.51.100.20")
    with running_server(venv, project, env) as server:
        assert post_mcp(server, CALL, colleague, headers=office).status_code == 200  # at work before
        failures = [post_mcp(server, CALL, key(), headers=office).status_code for _ in range(3)]
        watch = EventWatch(server)
        right = post_mcp(server, CALL, newcomer, headers=office)
        wrong = post_mcp(server, CALL, key(), headers=office)
        working = post_mcp(server, CALL, colleague, headers=office)
        elsewhere = post_mcp(server, CALL, newcomer, headers=from_address("198.51.100.21"))
        new_events = watch.new()
    assert failures == [401, 401, 401]
    # The right key never used from the blocked address is answered exactly as a wrong one.
    assert right.status_code == wrong.status_code == 429
    assert same_but_seconds(right.text) == same_but_seconds(wrong.text)
    assert right.json()["error"] == "client_blocked"
    assert {k: v for k, v in right.headers.items() if k != "retry-after"} == {
        k: v for k, v in wrong.headers.items() if k != "retry-after"
    }
    assert_security_headers(right)
    # The colleague who was already working from there keeps working; the newcomer can elsewhere.
    assert working.status_code == 200 and "result" in working.json()
    assert elsewhere.status_code == 200
    # Neither credential was verified while blocked: no authentication_failed, one client_blocked each.
    assert [e["event"] for e in new_events if e["identifier"] == "198.51.100.20"] == ["client_blocked"] * 2


# ---- 8: no credential is no failed login -------------------------------------------------------------------


def test_requests_without_a_token_always_get_the_challenge_and_never_block(
    oauth_project: Path, venv: Venv, tmp_path: Path
) -> None:
    with serving_with_issuer(
        venv, oauth_project, tmp_path, MCP_AUTH_FAILURE_THRESHOLD="3", MCP_TRUSTED_PROXIES="127.0.0.1"
    ) as (server, issuer):
        office = from_address("198.51.100.30")
        first_steps = [post_mcp(server, CALL, headers=office) for _ in range(20)]  # 20 colleagues sign in
        token = issuer.token("alice", "mcp:tools notes:read")
        signed_in = post_mcp(server, CALL, token, headers=office)
        # A blocked address still gets the challenge, so its clients can sign in again.
        for _ in range(3):
            post_mcp(server, CALL, "not-a-token-" + secrets.token_hex(8), headers=office)
        while_blocked = post_mcp(server, CALL, headers=office)
    assert [r.status_code for r in first_steps] == [401] * 20
    for answer in (*first_steps, while_blocked):
        assert answer.status_code == 401
        assert "resource_metadata=" in answer.headers["www-authenticate"]
        assert "error=" not in answer.headers["www-authenticate"]
    assert signed_in.status_code == 200, signed_in.text


# ---- 9: no work for a blocked address ----------------------------------------------------------------------


class CountingIntrospection:
    """An RFC 7662 endpoint on loopback that counts the tokens it is asked about and knows none."""

    def __init__(self) -> None:
        self.asked = 0
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                counter.asked += 1
                body = json.dumps({"active": False}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/introspect"

    def __enter__(self) -> CountingIntrospection:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def introspection() -> Iterator[CountingIntrospection]:
    with CountingIntrospection() as endpoint:
        yield endpoint


def test_a_blocked_address_costs_no_introspection_call(
    oauth_project: Path, venv: Venv, tmp_path: Path, introspection: CountingIntrospection
) -> None:
    with serving_with_issuer(
        venv,
        oauth_project,
        tmp_path,
        MCP_AUTH_FAILURE_THRESHOLD="3",
        MCP_AUTH_BLOCK_SECONDS="600",
        MCP_OAUTH_INTROSPECTION_URL=introspection.url,
        MCP_OAUTH_CLIENT_ID="resource-server",
        MCP_OAUTH_CLIENT_SECRET=secrets.token_urlsafe(24),
        MCP_OAUTH_INTROSPECTION_CACHE_SECONDS="0",
    ) as (server, _):
        statuses = [post_mcp(server, CALL, "opaque-" + secrets.token_hex(16)).status_code for _ in range(30)]
    assert statuses == [401] * 3 + [429] * 27
    assert introspection.asked == 3  # the three failures that blocked it; none after


# ---- 10: any failure in verification is a 401 --------------------------------------------------------------


def test_a_jwt_whose_alg_does_not_fit_its_key_is_an_invalid_token_401(
    oauth_project: Path, venv: Venv, tmp_path: Path
) -> None:
    with serving_with_issuer(venv, oauth_project, tmp_path, MCP_AUTH_FAILURE_THRESHOLD="2") as (
        server,
        issuer,
    ):
        good = issuer.token("alice", "mcp:tools")
        claims = jwt.decode(good, options={"verify_signature": False})
        # ES256 is on the allow-list, but the kid names the issuer's RSA key.
        crafted = jwt.encode(
            claims,
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": "test-key", "typ": "at+jwt"},
        )
        watch = EventWatch(server)
        answers = [post_mcp(server, CALL, crafted) for _ in range(3)]
        events = watch.new()
    assert [a.status_code for a in answers] == [401, 401, 429]  # counted toward the block
    for answer in answers[:2]:
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
        assert "Traceback" not in answer.text
        assert_security_headers(answer)
    failed = [e for e in events if e["event"] == "authentication_failed"]
    assert [e["details"]["reason"] for e in failed] == ["invalid_token"] * 2
    assert "Traceback" not in server.log()


# ---- 11: sessions never lock out their owner, and their cap holds -----------------------------------------

INITIALIZE = jsonrpc(
    "initialize",
    {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
)


def initialize(server: Server, token: str) -> httpx2.Response:
    return post_mcp(server, INITIALIZE, token)


def ping(server: Server, token: str, session: str) -> int:
    return post_mcp(server, jsonrpc("ping", id=2), token, {"Mcp-Session-Id": session}).status_code


def test_a_principal_at_its_cap_ends_its_least_recently_used_session(project: Path, venv: Venv) -> None:
    alice, bob = key(), key()
    env = {**read_env_file(project), "MCP_API_KEYS": f"{alice},{bob}", "MCP_MAX_SESSIONS_PER_PRINCIPAL": "3"}
    with running_server(venv, project, env) as server:
        bobs = initialize(server, bob).headers["mcp-session-id"]
        # Alice's client restarts three times without ending its sessions, as most clients do.
        first, second, third = (initialize(server, alice).headers["mcp-session-id"] for _ in range(3))
        assert ping(server, alice, first) == 200  # the first is used again: the second is now the oldest
        fourth = initialize(server, alice)
        assert fourth.status_code == 200, fourth.text
        answers = {
            name: ping(server, alice, session)
            for name, session in (("first", first), ("second", second), ("third", third))
        }
        answers["fourth"] = ping(server, alice, fourth.headers["mcp-session-id"])
        # Alice at her cap never ends Bob's session, however many she opens.
        for _ in range(4):
            assert initialize(server, alice).status_code == 200
        bob_still = ping(server, bob, bobs)
        ended = EventWatch(server)
        ended.start = 0
        events = ended.new("session_ended")
    assert answers == {"first": 200, "second": 404, "third": 200, "fourth": 200}
    assert bob_still == 200
    assert len(events) == 5 and {e["identifier"] for e in events} == {events[0]["identifier"]}


def test_concurrent_initializes_never_open_more_than_the_cap(project: Path, venv: Venv) -> None:
    token = key()
    env = {**read_env_file(project), "MCP_API_KEYS": token, "MCP_RATE_LIMIT": "100000/minute"}  # cap: 10

    async def burst(server: Server) -> list[httpx2.Response]:
        async with httpx2.AsyncClient(timeout=60, limits=httpx2.Limits(max_connections=60)) as http:
            answers: list[httpx2.Response] = []

            async def one() -> None:
                answers.append(await post_mcp_async(http, server, INITIALIZE, token))

            async with anyio.create_task_group() as group:
                for _ in range(60):
                    group.start_soon(one)
            return answers

    with running_server(venv, project, env) as server:
        answers = anyio.run(burst, server)
        opened = [a.headers["mcp-session-id"] for a in answers if a.status_code == 200]
        alive = [session for session in opened if ping(server, token, session) == 200]
    assert opened, [a.status_code for a in answers]
    assert len(alive) <= 10, len(alive)
    assert {a.status_code for a in answers} <= {200, 429}
