"""Helpers for the sample-tool tests: read the audit trail, add a tool module to a rendered project."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ElicitRequestParams, ElicitResult

from support import Server, Venv, clean_env, free_port, jsonrpc, package_of


def all_events(server: Server, admin_key: str, **filters: str) -> list[dict[str, Any]]:
    """Every event the server's /security/events endpoint holds, following next_cursor."""
    events: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "500", **filters}
    while True:
        response = httpx2.get(
            server.base + "/security/events",
            params=params,
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        events.extend(body["events"])
        if not body.get("next_cursor"):
            return events
        params["cursor"] = body["next_cursor"]


def refusals_for(events: list[dict[str, Any]], tool: str) -> list[dict[str, Any]]:
    # anomaly_detected is an observation about refusals, not one of them.
    return [e for e in events if e["tool"] == tool and e["event"] not in ("tool_called", "anomaly_detected")]


def add_tool_module(project: Path, module: str, source: str) -> Path:
    """Do what the README's "Writing tools, resources and prompts safely" says: drop a module in tools/."""
    _, package = package_of(project)
    path = project / "src" / package / "tools" / f"{module}.py"
    path.write_text(source)
    return path


def readme_tool_example(project: Path, heading: str = "### A tool") -> str:
    """The first Python block under `heading` in the rendered README's guide to tools, resources and
    prompts."""
    readme = (project / "README.md").read_text()
    guide = readme.split("## Writing tools, resources and prompts safely", 1)[1]
    section = guide.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"README has no python example under {heading!r}"
    return match.group(1)


class Issuer:
    """A tiny OAuth issuer on loopback: an RSA key, its JWKS over HTTP, and signed access tokens."""

    def __init__(self, audience: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.audience = audience
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_url = f"{self.issuer}/jwks.json"
        self._server: Any = None

    def __enter__(self) -> Self:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import jwt

        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        keys = json.dumps({"keys": [{**jwk, "kid": "test-key", "alg": "RS256", "use": "sig"}]}).encode()
        # RFC 8414 metadata too, for `check`, which compares the settings with it.
        metadata = json.dumps({"issuer": self.issuer, "jwks_uri": self.jwks_url}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = metadata if self.path.startswith("/.well-known/") else keys
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, subject: str, scopes: str) -> str:
        import time

        import jwt

        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "scope": scopes,
            "iat": int(time.time()),
            "exp": int(time.time()) + 600,
        }
        return jwt.encode(
            claims, self.key, algorithm="RS256", headers={"kid": "test-key", "typ": "at+jwt"}
        )  # RFC 9068

    def settings(self) -> dict[str, str]:
        return {
            "MCP_OAUTH_ISSUER": self.issuer,
            "MCP_OAUTH_JWKS_URL": self.jwks_url,
            "MCP_RESOURCE_URL": self.audience,
        }


@contextlib.asynccontextmanager
async def mcp_over_http(url: str, token: str, **client_kwargs: Any) -> AsyncIterator[Client]:
    """Like support.http_client, with Client options (e.g. elicitation_callback)."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), **client_kwargs) as client,
    ):
        yield client


def raw_stdio(
    venv: Venv, project: Path, env: dict[str, str], messages: list[dict[str, Any]], answers: int
) -> tuple[dict[Any, dict[str, Any]], list[dict[str, Any]], str]:
    """Send raw JSON-RPC lines over stdio: (answers by id, security events, the rest of stderr)."""
    command, _ = package_of(project)
    initialize = [
        jsonrpc(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
            id=0,
        ),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    process = subprocess.Popen(
        [venv.bin(command), "serve", "--transport", "stdio"],
        cwd=project,
        env=clean_env(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("".join(json.dumps(m) + "\n" for m in initialize + messages).encode())
    process.stdin.flush()
    lines = []
    while len(lines) < answers + 1:  # the initialize answer too
        line = process.stdout.readline()
        if not line:
            break
        lines.append(json.loads(line))
    _, stderr = process.communicate(timeout=30)
    by_id = {m["id"]: m for m in lines if "id" in m}
    log = stderr.decode(errors="replace")
    found = [json.loads(line) for line in log.splitlines() if line.startswith('{"logger":"security"')]
    rest = "\n".join(line for line in log.splitlines() if not line.startswith('{"logger":"security"'))
    return by_id, found, rest


class User:
    """An elicitation callback that answers like a person would, and remembers what it was asked."""

    def __init__(self, action: str, confirm: bool = True) -> None:
        self.action, self.confirm, self.asked = action, confirm, []

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params.message)
        content = {"confirm": self.confirm} if self.action == "accept" else None
        return ElicitResult(action=self.action, content=content)  # type: ignore[arg-type]
