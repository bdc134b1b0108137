"""The HTTP perimeter of a rendered server, attacked over real HTTP: API keys, CORS, Host/Origin
(DNS rebinding), security headers on every response, trusted proxies, and `check`.

Each refusal must carry a precise status and write exactly one security event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from support import (
    Server,
    Venv,
    http_client,
    jsonrpc,
    package_of,
    post_mcp,
    read_env_file,
    running_server,
    text_of,
)
from support.oauth_server import AuthServer
from support.perimeter import EventWatch, assert_security_headers, digest_of, security_events

pytestmark = pytest.mark.anyio

OLD_KEY = "mcp_old-key-being-rotated-out-0123456789"
NEW_KEY = "mcp_new-key-stored-as-a-digest-0123456789"
ADMIN_KEY = "mcp_admin-key-for-the-events-0123456789"
TRUSTED = "https://app.example.com"
CALL = jsonrpc("tools/call", {"name": "whoami", "arguments": {}})


def base_env(project: Path, **extra: str) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_API_KEYS": f"{OLD_KEY},{digest_of(NEW_KEY)}",
        "MCP_ADMIN_API_KEYS": digest_of(ADMIN_KEY),
        "MCP_TRUSTED_ORIGINS": TRUSTED,
        "MCP_SECURITY_EVENTS_URL": "memory://",
        "MCP_RATE_LIMIT": "10000/minute",
        # Many refusals on purpose: no blocking of 127.0.0.1 here (tests/test_audit.py tests blocking).
        "MCP_AUTH_FAILURE_THRESHOLD": "100000",
        "MCP_MAX_BODY_BYTES": "4096",
        **extra,
    }


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("both")


@pytest.fixture(scope="module")
def server(project: Path, venv: Venv) -> Iterator[Server]:
    with running_server(venv, project, base_env(project)) as server:
        yield server


def get(server: Server, path: str, key: str | None = None, **kwargs: object) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return httpx2.get(server.base + path, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def refused_once(server: Server, watch: EventWatch, event: str, **details: object) -> dict[str, object]:
    [found] = watch.new()
    assert found["event"] == event, found
    for name, value in details.items():
        assert found["details"][name] == value, found
    return found


# ---- API keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_credential"),
        ("Basic dXNlcjpwYXNzd29yZA==", "malformed_header"),
        ("Bearer", "malformed_header"),
        ("Token " + OLD_KEY, "malformed_header"),
        ("Bearer mcp_wrong-key-000000000000000000000", "unknown_credential"),
        ("Bearer " + digest_of(OLD_KEY), "unknown_credential"),  # the stored digest is not a key
    ],
)
def test_without_a_valid_key_is_401_with_one_event(server: Server, header: str | None, reason: str) -> None:
    watch = EventWatch(server)
    headers = {"Authorization": header} if header is not None else {}
    response = post_mcp(server, CALL, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="mcp"')
    assert set(response.json()) == {"error", "message"}
    event = refused_once(server, watch, "authentication_failed", reason=reason)
    assert event["identifier"] == "127.0.0.1"
    assert_security_headers(response)


def test_a_session_id_is_no_credential(server: Server) -> None:
    # Stateless HTTP: there are no sessions to hijack, and every request is authenticated on its own.
    with_key = post_mcp(
        server,
        jsonrpc(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        ),
        OLD_KEY,
    )
    assert with_key.status_code == 200
    session = with_key.headers.get("mcp-session-id", "0123456789abcdef0123456789abcdef")
    watch = EventWatch(server)
    response = post_mcp(server, CALL, headers={"Mcp-Session-Id": session})
    assert response.status_code == 401
    refused_once(server, watch, "authentication_failed", reason="missing_credential")


@pytest.mark.parametrize("name", ["api_key", "access_token", "token", "API_KEY"])
def test_a_key_in_the_query_string_is_refused_even_when_valid(server: Server, name: str) -> None:
    watch = EventWatch(server)
    response = httpx2.post(
        server.url,
        params={name: OLD_KEY},
        json=CALL,
        timeout=10,
        headers={"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {OLD_KEY}"},
    )
    assert response.status_code == 401
    assert 'error="invalid_request"' in response.headers["www-authenticate"]
    refused_once(server, watch, "authentication_failed", reason="credential_in_query")


@pytest.mark.parametrize("key", [OLD_KEY, NEW_KEY], ids=["raw key", "key stored as digest"])
async def test_both_keys_work_during_rotation(server: Server, key: str) -> None:
    async with http_client(server.url, key) as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error
    fingerprint = digest_of(key).removeprefix("sha256:")[:12]
    assert f"principal: key:{fingerprint}" in text_of(result)


def test_a_revoked_key_is_refused_after_restart(project: Path, venv: Venv) -> None:
    env = base_env(project, MCP_API_KEYS=digest_of(NEW_KEY))
    with running_server(venv, project, env) as server:
        assert post_mcp(server, jsonrpc("tools/list"), OLD_KEY).status_code == 401
        assert post_mcp(server, jsonrpc("tools/list"), NEW_KEY).status_code == 200
        assert [e["details"]["reason"] for e in security_events(server)] == ["unknown_credential"]


def test_admin_and_tool_keys_each_open_only_their_own_surface(server: Server) -> None:
    watch = EventWatch(server)
    tool_on_admin = get(server, "/security/events", OLD_KEY)
    assert tool_on_admin.status_code == 403
    assert (
        'error="insufficient_scope", error_description="insufficient scope", scope="admin"'
        in (tool_on_admin.headers["www-authenticate"])
    )
    admin_on_tools = post_mcp(server, jsonrpc("tools/list"), ADMIN_KEY)
    assert admin_on_tools.status_code == 403
    assert [e["event"] for e in watch.new()] == ["authorization_denied", "authorization_denied"]
    assert get(server, "/security/events", ADMIN_KEY).status_code == 200


def test_keys_never_appear_in_logs_events_or_responses(server: Server) -> None:
    # After the tests above sent every key in every way, including the wrong ones.
    post_mcp(server, CALL, OLD_KEY, headers={"X-Debug": OLD_KEY})
    response = get(server, "/security/events", ADMIN_KEY, params={"limit": 500})
    assert response.status_code == 200 and response.json()["events"]
    log = server.log()
    for key in (OLD_KEY, NEW_KEY, ADMIN_KEY, "mcp_wrong-key-000000000000000000000"):
        assert key not in log
        assert key not in response.text


# ---- CORS and Origin --------------------------------------------------------------------------------

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version, mcp-session-id, "
    "last-event-id",
}


def test_preflight_from_a_trusted_origin_is_answered(server: Server) -> None:
    response = httpx2.options(server.url, headers={"Origin": TRUSTED, **PREFLIGHT}, timeout=10)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == TRUSTED
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {
        "authorization",
        "content-type",
        "mcp-protocol-version",
        "mcp-session-id",
        "last-event-id",
    } <= allowed
    assert "access-control-allow-credentials" not in response.headers
    assert_security_headers(response)


def test_a_request_from_a_trusted_origin_exposes_the_session_header(server: Server) -> None:
    response = post_mcp(server, jsonrpc("tools/list"), OLD_KEY, headers={"Origin": TRUSTED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == TRUSTED
    assert "mcp-session-id" in response.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example.com", "null", "https://app.example.com.evil.com", "http://app.example.com"],
)
def test_an_untrusted_origin_is_403_with_one_event(server: Server, origin: str) -> None:
    for request in (
        lambda: httpx2.options(server.url, headers={"Origin": origin, **PREFLIGHT}, timeout=10),
        lambda: post_mcp(server, CALL, OLD_KEY, headers={"Origin": origin}),
    ):
        watch = EventWatch(server)
        response = request()
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers
        refused_once(server, watch, "untrusted_origin_blocked", origin=origin)
        assert_security_headers(response)
    assert not [
        e
        for e in security_events(server)
        if e["event"] == "tool_called" and e["details"].get("client") == origin
    ]


# ---- Host (DNS rebinding) ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example.com", "attacker.example:80", "127.0.0.1.nip.io"])
def test_a_foreign_host_header_is_421_before_authentication(server: Server, host: str) -> None:
    watch = EventWatch(server)
    response = post_mcp(server, CALL, OLD_KEY, headers={"Host": host})
    assert response.status_code == 421
    refused_once(server, watch, "untrusted_origin_blocked", reason="host not allowed", host=host)
    assert_security_headers(response)


def test_loopback_host_names_are_allowed_by_default(server: Server) -> None:
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
        assert post_mcp(server, jsonrpc("tools/list"), OLD_KEY, headers={"Host": host}).status_code == 200


# ---- Security headers on every response -------------------------------------------------------------


def test_security_headers_on_success_and_every_error(server: Server) -> None:
    responses = {
        200: get(server, "/health"),
        401: post_mcp(server, CALL),
        404: get(server, "/no-such-path", OLD_KEY),
        413: post_mcp(server, {**CALL, "padding": "x" * 8192}, OLD_KEY),
    }
    for status, response in responses.items():
        assert response.status_code == status, (status, response.text)
        assert_security_headers(response)
    ok = post_mcp(server, jsonrpc("tools/list"), OLD_KEY)
    assert ok.status_code == 200
    assert_security_headers(ok)


# ---- Trusted proxies and the per-address limit -------------------------------------------------------


def test_forged_forwarded_for_is_ignored_without_trusted_proxies(project: Path, venv: Venv) -> None:
    env = base_env(project, MCP_AUTH_FAILURE_THRESHOLD="3")
    with running_server(venv, project, env) as server:
        statuses = [
            post_mcp(
                server,
                CALL,
                "mcp_wrong-key-000000000000000000000",
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
            ).status_code
            for n in range(5)
        ]
        limited = post_mcp(
            server, CALL, "mcp_wrong-key-000000000000000000000", headers={"X-Forwarded-For": "198.51.100.1"}
        )
        events = security_events(server)
    # Every forged address counted against the one socket address: the block held.
    assert statuses == [401, 401, 401, 429, 429]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert_security_headers(limited)
    assert {e["identifier"] for e in events} == {"127.0.0.1"}
    # While blocked, nothing is verified: no authentication_failed, one client_blocked each.
    assert [e["event"] for e in events] == ["authentication_failed"] * 3 + ["client_blocked"] * 4


def test_forwarded_for_is_honoured_from_a_trusted_proxy(project: Path, venv: Venv) -> None:
    env = base_env(project, MCP_TRUSTED_PROXIES="127.0.0.1")
    with running_server(venv, project, env) as server:
        response = post_mcp(server, CALL, headers={"X-Forwarded-For": "203.0.113.9"})
        events = security_events(server)
    assert response.status_code == 401
    assert [(e["event"], e["identifier"]) for e in events] == [("authentication_failed", "203.0.113.9")]


# ---- check ------------------------------------------------------------------------------------------


def check(venv: Venv, project: Path, where: Path, **env: str) -> tuple[int, str]:
    """`check` in a directory with no .env, so only the settings given here count."""
    command, _ = package_of(project)
    lock = str(project / "tools.lock.json")
    result = venv.run(
        venv.bin(command),
        "check",
        "--transport",
        "http",
        "--lock",
        lock,
        cwd=where,
        env={"MCP_SECURITY_EVENTS_URL": "memory://", **env},
        timeout=60,
    )
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout + result.stderr


SOUND = {"MCP_API_KEYS": f"alice:{OLD_KEY}"}  # named: `check` warns about an unnamed key


def test_check_passes_a_sound_configuration(project: Path, venv: Venv, tmp_path: Path) -> None:
    code, output = check(venv, project, tmp_path, **SOUND)
    assert code == 0, output
    assert "configuration is valid" in output and "ERROR" not in output and "WARNING" not in output


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "MCP_API_KEYS is empty"),
        ({"MCP_API_KEYS": "short"}, "MCP_API_KEYS entry 1"),
        ({**SOUND, "MCP_ADMIN_API_KEYS": "sha256:abc"}, "MCP_ADMIN_API_KEYS entry 1"),
        ({**SOUND, "MCP_TRUSTED_ORIGINS": "*"}, "wildcard origins are not allowed"),
        ({**SOUND, "MCP_TRUSTED_ORIGINS": "https://*.example.com"}, "wildcard origins are not allowed"),
        ({**SOUND, "MCP_TLS_CERTFILE": "cert.pem"}, "MCP_TLS_KEYFILE"),
    ],
)
def test_check_fails_on_each_error(
    project: Path, venv: Venv, tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    code, output = check(venv, project, tmp_path, **env)
    assert code != 0
    assert expected in output


def test_check_warns_about_a_public_bind_without_tls(project: Path, venv: Venv, tmp_path: Path) -> None:
    code, output = check(venv, project, tmp_path, **SOUND, MCP_HOST="0.0.0.0")  # noqa: S104 - under test
    assert code == 0, output
    assert "WARNING" in output and "plain HTTP" in output and "MCP_TLS_CERTFILE" in output
    assert "MCP_ALLOWED_HOSTS" in output


def test_check_warns_about_a_wildcard_proxy(project: Path, venv: Venv, tmp_path: Path) -> None:
    code, output = check(venv, project, tmp_path, **SOUND, MCP_TRUSTED_PROXIES="*")
    assert code == 0, output
    assert "WARNING" in output and "forge X-Forwarded-For" in output


def test_check_fails_on_oauth_without_issuer_audience_or_jwks(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    project = rendered("oauth")
    code, output = check(venv, project, tmp_path)
    assert code != 0
    for variable in ("MCP_OAUTH_ISSUER", "MCP_OAUTH_JWKS_URL", "MCP_RESOURCE_URL", "MCP_OAUTH_AUDIENCE"):
        assert variable in output
    # `check` asks the issuer for its metadata: a real one on loopback (plain http is allowed there).
    with AuthServer() as auth:
        sound = auth.settings("https://mcp.example.com/mcp")
        code, output = check(venv, project, tmp_path, **sound)
    assert code == 0, output
    assert "authentication: oauth" in output
    plain = {
        **sound,
        "MCP_OAUTH_ISSUER": "http://auth.example.com",
        "MCP_OAUTH_JWKS_URL": "http://auth.example.com/jwks.json",
    }
    code, output = check(venv, project, tmp_path, **plain)
    assert code != 0
    assert "MCP_OAUTH_JWKS_URL must be an https:// URL" in output
    assert "MCP_OAUTH_ISSUER must be an https:// URL" in output
