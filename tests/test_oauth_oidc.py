"""OAuth against a real, OpenID-certified authorization server (node oidc-provider 9, pinned) and real
clients.

One authorization server for the module (tests/support/oidc_provider.mjs), configured as an MCP
authorization server: resource indicators with JWT access tokens, dynamic registration, client
credentials, authorization code + PKCE S256, introspection. The rendered server runs with the default
OAuth configuration (no required scopes) and the notes tools, whose scopes (notes:read, notes:write)
are not required. The first 401 names the baseline only (the read-only items' scopes: notes:read), so a
client's first token lacks notes:write, and the first write steps up after a 403 (issue 29, item 4).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientMetadata

from support import (
    Server,
    Venv,
    free_port,
    http_client,
    jsonrpc,
    package_of,
    post_mcp,
    read_env_file,
    running_server,
    text_of,
)
from support.node import NODE_BIN, node_env
from support.oidc import REDIRECT_URI, SERVER_CLIENT, Browser, MemoryStorage, OidcProvider
from support.perimeter import EventWatch, security_events

pytestmark = pytest.mark.anyio
TOOL_SCOPES = ["notes:read", "notes:write"]
BASELINE = "notes:read"  # required scopes (none here) plus those of the read-only items
OTHER_RESOURCE = "http://127.0.0.1:9/other/mcp"
ID_TOKEN_SECRET = "id-token-client-secret-0123456789"


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"main": free_port(), "introspection": free_port()}


def resource(port: int) -> str:
    return f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def oidc(ports: dict[str, int]) -> Iterator[OidcProvider]:
    # A client whose client_id is the main server's resource URL: its ID tokens have that `aud`.
    id_token_client = {
        "client_id": resource(ports["main"]),
        "client_secret": ID_TOKEN_SECRET,
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_post",  # its id has a ':', which basic auth cannot carry
    }
    provider = OidcProvider(
        clients=[id_token_client],
        opaque_resources=[resource(ports["introspection"]), OTHER_RESOURCE],
    ).start()
    yield provider
    provider.stop()


def oauth_env(project: Path, oidc: OidcProvider, port: int, **extra: str) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_OAUTH_ISSUER": oidc.issuer,
        "MCP_OAUTH_JWKS_URL": oidc.jwks_url,
        "MCP_RESOURCE_URL": resource(port),
        "MCP_SECURITY_EVENTS_URL": "memory://",
        "MCP_RATE_LIMIT": "10000/minute",
        "MCP_AUTH_FAILURE_THRESHOLD": "100000",
        **extra,
    }


def introspection_env(oidc: OidcProvider, url: str | None = None) -> dict[str, str]:
    return {
        "MCP_OAUTH_INTROSPECTION_URL": url or oidc.introspection_url,
        "MCP_OAUTH_CLIENT_ID": SERVER_CLIENT["client_id"],
        "MCP_OAUTH_CLIENT_SECRET": SERVER_CLIENT["client_secret"],
    }


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("oauth")


@pytest.fixture(scope="module")
def server(project: Path, venv: Venv, oidc: OidcProvider, ports: dict[str, int]) -> Iterator[Server]:
    with running_server(venv, project, oauth_env(project, oidc, ports["main"]), port=ports["main"]) as server:
        yield server


@pytest.fixture(scope="module")
def introspecting(project: Path, venv: Venv, oidc: OidcProvider, ports: dict[str, int]) -> Iterator[Server]:
    port = ports["introspection"]
    env = oauth_env(project, oidc, port, **introspection_env(oidc))
    with running_server(venv, project, env, port=port) as server:
        yield server


def challenge_of(response: httpx2.Response) -> str:
    return response.headers.get("www-authenticate", "")


def test_metadata_names_every_scope_and_the_401_the_baseline(server: Server) -> None:
    metadata = httpx2.get(server.base + "/.well-known/oauth-protected-resource/mcp", timeout=10).json()
    assert metadata["scopes_supported"] == TOOL_SCOPES  # no offline_access, no wildcard, no admin
    response = post_mcp(server, jsonrpc("tools/list"))
    assert response.status_code == 401
    challenge = challenge_of(response)
    assert f'scope="{BASELINE}"' in challenge  # least privilege at sign-in: no write scope yet
    # An OAuth server speaks of tokens only (issue 29, item 5).
    assert response.json()["message"] == "Send Authorization: Bearer <access token>."
    # No credential at all: no error code and no description (RFC 6750 section 3.1).
    assert "error=" not in challenge and "error_description" not in challenge


def test_a_call_needing_a_scope_the_token_lacks_is_403_before_it_runs(
    server: Server, oidc: OidcProvider
) -> None:
    token = oidc.client_credentials("machine", server.url, "notes:read")["access_token"]
    watch = EventWatch(server)
    call = jsonrpc("tools/call", {"name": "add_note", "arguments": {"text": "not saved"}})
    response = post_mcp(server, call, token)
    assert response.status_code == 403, response.text
    challenge = challenge_of(response)
    assert challenge.startswith('Bearer realm="mcp", error="insufficient_scope"')
    assert 'scope="notes:read notes:write"' in challenge  # what it needs, and what it already has
    assert f'resource_metadata="{server.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    [event] = watch.new()
    assert event["event"] == "authorization_denied"
    assert event["identifier"] == "client:machine"
    assert event["details"]["missing_scopes"] == ["notes:write"]
    assert event["tool"] == "add_note"
    # The same token still calls what it may, through SingleExchange and through the SDK's own path.
    listing = jsonrpc("tools/call", {"name": "list_notes", "arguments": {}})
    assert post_mcp(server, listing, token).status_code == 200
    assert (
        post_mcp(
            server,
            listing,
            token,
            headers={"Accept": "text/event-stream, application/json", "Mcp-Protocol-Version": "2025-06-18"},
        ).status_code
        == 200
    )


async def test_python_sdk_client_signs_in_and_steps_up_and_users_never_meet_clients(
    server: Server, oidc: OidcProvider
) -> None:
    # alice grants what the client asks for: first the baseline, then notes:write at the first write.
    oidc.set_user("alice")
    browser = Browser(oidc)
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=server.url,
        client_metadata=OAuthClientMetadata(
            client_name="python-sdk-test",
            redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
            grant_types=["authorization_code"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,  # type: ignore[arg-type]
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    watch = EventWatch(server)
    async with http_client(server.url, auth=provider) as client:
        whoami = text_of(await client.call_tool("whoami", {}))
        saved = await client.call_tool("add_note", {"text": "alice's note"})
        listed = text_of(await client.call_tool("list_notes", {}))
    client_id = storage.client.client_id
    assert whoami == f"principal: user:alice\nscopes: notes:read\nclient: {client_id}"
    assert not saved.is_error and "Saved note" in text_of(saved)
    assert "alice's note" in listed
    # Two authorizations: the first for the baseline the 401 named (no write scope), the second after the
    # 403 insufficient_scope of the first write.
    assert browser.asked == [BASELINE, "notes:read notes:write"]
    assert "notes:write" in storage.tokens.scope.split()
    denied = [e for e in watch.new() if e["event"] == "authorization_denied"]
    assert [(e["identifier"], e["details"]["client_id"], e["tool"]) for e in denied] == [
        ("user:alice", client_id, "add_note")
    ]
    called = [e for e in security_events_named(server, "tool_called") if e["tool"] == "add_note"]
    assert called[-1]["details"]["client_id"] == client_id
    # A client whose id is "alice" is another principal: it does not see the user alice's notes.
    machine = oidc.client_credentials("alice", server.url, "notes:read")["access_token"]
    async with http_client(server.url, machine) as client:
        assert "alice's note" not in text_of(await client.call_tool("list_notes", {}))
        assert text_of(await client.call_tool("whoami", {})).startswith("principal: client:alice\n")


def security_events_named(server: Server, name: str) -> list[dict[str, Any]]:
    return [event for event in security_events(server) if event["event"] == name]


def test_typescript_sdk_client_signs_in_and_steps_up(server: Server, oidc: OidcProvider) -> None:
    oidc.set_user("bob")
    script = Path(__file__).parent / "support" / "ts_oauth_client.mjs"
    result = subprocess.run(
        [
            str(NODE_BIN / "node"),
            str(script),
            server.url,
            "add_note",
            json.dumps({"text": "from typescript"}),
        ],
        cwd=Path(__file__).parents[1],
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["whoami"].startswith("principal: user:bob\nscopes: notes:read\nclient: ")
    assert not report["is_error"] and "Saved note" in report["result"], report
    assert 401 in report["statuses"] and 403 in report["statuses"]
    assert report["authorizations"] == 2
    assert report["resource"] == server.url
    assert report["requested_scopes"] == [BASELINE, "notes:read notes:write"]
    assert report["token_scopes"][0].split() == [BASELINE]  # the first token lacks the write scope
    assert "notes:write" in report["token_scopes"][-1].split()


def test_an_id_token_whose_audience_is_this_resource_is_not_an_access_token(
    server: Server, oidc: OidcProvider
) -> None:
    oidc.set_user("carol")
    tokens = oidc.code_flow(server.url, ID_TOKEN_SECRET, REDIRECT_URI, "openid")
    id_token = tokens["id_token"]
    assert jwt.decode(id_token, options={"verify_signature": False})["aud"] == server.url
    watch = EventWatch(server)
    response = post_mcp(server, jsonrpc("tools/list"), id_token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge_of(response)
    [event] = watch.new()
    assert event["details"]["reason"] == "not_an_access_token"


def test_opaque_tokens_are_checked_by_introspection(introspecting: Server, oidc: OidcProvider) -> None:
    server = introspecting

    def status_and_reason(token: str) -> tuple[int, str | None]:
        watch = EventWatch(server)
        response = post_mcp(server, jsonrpc("tools/call", {"name": "whoami", "arguments": {}}), token)
        events = [e for e in watch.new() if e["event"] == "authentication_failed"]
        return response.status_code, events[0]["details"]["reason"] if events else None

    valid = oidc.client_credentials("machine", server.url, "notes:read")
    assert valid["access_token"].count(".") == 0  # opaque
    response = post_mcp(
        server, jsonrpc("tools/call", {"name": "whoami", "arguments": {}}), valid["access_token"]
    )
    assert response.status_code == 200
    assert "principal: client:machine" in response.text and "scopes: notes:read" in response.text
    revoked = oidc.client_credentials("machine", server.url, "notes:read")["access_token"]
    oidc.revoke(revoked, "machine")
    assert status_and_reason(revoked) == (401, "inactive_token")
    # Accepted while it lives (and cached), refused once it expired: the cache never outlives `exp`.
    expired = oidc.client_credentials("short-lived-machine", server.url, "notes:read")["access_token"]
    assert status_and_reason(expired) == (200, None)
    time.sleep(3.5)
    assert status_and_reason(expired) in ((401, "inactive_token"), (401, "expired"))
    other = oidc.client_credentials("machine", OTHER_RESOURCE, "notes:read")["access_token"]
    assert status_and_reason(other) == (401, "wrong_audience")
    # JWTs are still verified locally on a server that introspects.
    jwt_token = oidc.client_credentials("machine", resource(free_port()), "notes:read")["access_token"]
    assert status_and_reason(jwt_token) == (401, "wrong_audience")
    assert SERVER_CLIENT["client_secret"] not in server.log()


def test_introspection_endpoint_down_refuses_opaque_tokens(
    project: Path, venv: Venv, oidc: OidcProvider, ports: dict[str, int]
) -> None:
    port = ports["introspection"]  # the token's audience; this server takes the port after the other
    token = oidc.client_credentials("machine", resource(port), "notes:read")["access_token"]
    down = f"http://127.0.0.1:{free_port()}/token/introspection"
    other_port = free_port()
    env = oauth_env(project, oidc, other_port, **introspection_env(oidc, down))
    env["MCP_RESOURCE_URL"] = resource(port)
    with running_server(venv, project, env, port=other_port) as server:
        watch = EventWatch(server)
        response = post_mcp(server, jsonrpc("tools/list"), token)
        assert response.status_code == 401
        assert [e["details"]["reason"] for e in watch.new()] == ["introspection_unavailable"]


CHECK_CASES: dict[str, tuple[Callable[[OidcProvider], dict[str, str]], int, str]] = {
    "matching": (lambda o: {}, 0, "configuration is valid"),
    "issuer with a trailing slash": (
        lambda o: {"MCP_OAUTH_ISSUER": o.issuer + "/"},
        1,
        "set MCP_OAUTH_ISSUER={issuer} exactly",
    ),
    "another JWKS URL": (
        lambda o: {"MCP_OAUTH_JWKS_URL": o.issuer + "/keys.json"},
        1,
        "MCP_OAUTH_JWKS_URL is",
    ),
    "algorithm the keys cannot use": (
        lambda o: {"MCP_OAUTH_ALGORITHMS": "ES256"},
        1,
        "can only be used with RS256",
    ),
    "algorithm name nobody verifies": (
        lambda o: {"MCP_OAUTH_ALGORITHMS": "RS256,Ed25519"},
        2,
        "MCP_OAUTH_ALGORITHMS: Ed25519: not a JWS",
    ),
    "made-up algorithm name": (
        lambda o: {"MCP_OAUTH_ALGORITHMS": "XYZ999"},
        2,
        "XYZ999: not a JWS algorithm",
    ),
    "introspection without client credentials": (
        lambda o: {"MCP_OAUTH_INTROSPECTION_URL": o.introspection_url},
        1,
        "needs MCP_OAUTH_CLIENT_ID",
    ),
}


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_check_asks_the_authorization_server(
    project: Path, venv: Venv, oidc: OidcProvider, case: str
) -> None:
    change, code, expected = CHECK_CASES[case]
    env = {**oauth_env(project, oidc, 8000, **introspection_env(oidc)), **change(oidc)}
    if "introspection without" in case:
        env.pop("MCP_OAUTH_CLIENT_ID")
    command = venv.bin(package_of(project)[0])
    result = venv.run(command, "check", cwd=project, env=env, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert expected.format(issuer=oidc.issuer) in output
    assert SERVER_CLIENT["client_secret"] not in output
