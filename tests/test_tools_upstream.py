"""upstream_get through the real client against a rendered HTTP server and a real upstream on loopback.

The upstream is hostile on purpose: it echoes the key back in its body and headers, in several
encodings, and returns errors that contain it. MCP_UPSTREAM_URL is an operator setting, so a loopback
upstream is allowed (plain http only to loopback). The key must never reach a result, an error,
the server log or an audit event.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from support import Server, Venv, client_key, free_port, http_client, read_env_file, running_server, text_of

pytestmark = pytest.mark.anyio

UPSTREAM_KEY = "upk_" + secrets.token_urlsafe(24) + "+/"  # + and /: characters JSON encoders escape
# The key as upstreams echo it inside a JSON string: .NET writes + as \u002B, PHP / as \/, some
# encoders escape every character, and JSON inside JSON doubles each backslash.
JSON_ECHOES = {
    "dotnet": lambda key: key.replace("+", "\\u002B"),
    "php": lambda key: key.replace("/", "\\/"),
    "every": lambda key: "".join(f"\\u{ord(c):04X}" for c in key),
    "double": lambda key: key.replace("+", "\\\\u002B").replace("/", "\\\\/"),
}


class Upstream(BaseHTTPRequestHandler):
    seen_auth: list[str] = []  # noqa: RUF012 - shared by the handler threads on purpose

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        Upstream.seen_auth.append(auth)
        key = auth.removeprefix("Bearer ")
        echoes = {
            "Bearer": auth,
            "X-Echo-Key": key,
            "X-Echo-Quoted": quote(key, safe=""),
            "X-Echo-Base64": base64.b64encode(key.encode()).decode(),
            "Set-Cookie": f"session={key}",
        }
        body = json.dumps({"you_sent": auth, "key": key, "note": f"key={key}", "path": self.path})
        if self.path.startswith("/v1/ok"):
            self._send(200, body, echoes)
        elif self.path.startswith("/v1/escaped/"):
            echo = JSON_ECHOES[self.path.rsplit("/", 1)[1]](key)
            self._send(200, '{"received": "' + echo + '"}', {})
        elif self.path.startswith("/v1/error500"):
            self._send(
                500, f"Traceback (most recent call last):\n  key {key} rejected at /srv/app.py", echoes
            )
        elif self.path.startswith("/v1/error401"):
            self._send(401, body, {**echoes, "WWW-Authenticate": f'Bearer error="invalid_token {key}"'})
        elif self.path.startswith("/v1/slow"):
            time.sleep(3)
            self._send(200, body, echoes)
        elif self.path.startswith("/v1/redirect"):
            self._send(302, "", {"Location": f"http://127.0.0.1:1/?key={key}"})
        else:
            self._send(404, body, echoes)

    def _send(self, status: int, body: str, headers: dict[str, str]) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Upstream)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("http_all")


@pytest.fixture(scope="module")
def server(project: Path, venv: Venv, upstream: str) -> Iterator[Server]:
    env = {
        **read_env_file(project),
        "MCP_UPSTREAM_URL": upstream,
        "MCP_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "MCP_UPSTREAM_TIMEOUT_SECONDS": "1",
        "MCP_UPSTREAM_RATE_LIMIT": "1000/minute",
        "MCP_LOG_LEVEL": "DEBUG",
    }
    with running_server(venv, project, env) as running:
        yield running


async def call(server: Server, path: str, key: str | None = None) -> tuple[bool, str]:
    async with http_client(server.url, key or client_key(server.env)) as client:
        result = await client.call_tool("upstream_get", {"path": path})
    return bool(result.is_error), text_of(result)


def assert_no_key(text: str) -> None:
    for form in (
        UPSTREAM_KEY,
        quote(UPSTREAM_KEY, safe=""),
        base64.b64encode(UPSTREAM_KEY.encode()).decode()[:30],
    ):
        assert form not in text, f"the upstream key leaked: {text[:500]}"


async def test_success_hides_the_echoed_key(server: Server) -> None:
    before = len(Upstream.seen_auth)
    is_error, text = await call(server, "/v1/ok?x=1")
    assert not is_error, text
    assert Upstream.seen_auth[before:] == [f"Bearer {UPSTREAM_KEY}"]  # the key was really sent
    assert "status: 200" in text and "[redacted]" in text and '"path": "/v1/ok?x=1"' in text
    assert "set-cookie" not in text.lower()
    assert_no_key(text)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/error500", "answered HTTP 500."),
        ("/v1/error401", "answered HTTP 401."),
        ("/v1/missing", "answered HTTP 404."),
        ("/v1/slow", "did not answer within 1 seconds"),
        ("/v1/redirect", "answered HTTP 302"),
    ],
)
async def test_upstream_errors_become_safe_messages(server: Server, path: str, message: str) -> None:
    is_error, text = await call(server, path)
    assert "The upstream API" in text and message in text, text
    assert is_error
    assert_no_key(text)
    assert "Traceback" not in text and "/srv/app.py" not in text


@pytest.mark.parametrize("form", sorted(JSON_ECHOES))
async def test_a_key_echoed_json_escaped_never_reaches_the_model(server: Server, form: str) -> None:
    is_error, text = await call(server, f"/v1/escaped/{form}")
    assert not is_error, text
    assert JSON_ECHOES[form](UPSTREAM_KEY) not in text, text
    assert '"received": "[redacted]"' in text, text


@pytest.mark.parametrize(
    "path", ["//evil.example/x", "https://evil.example/", "/../admin", "/a/%2e%2e/b", "v1/ok"]
)
async def test_paths_cannot_leave_the_upstream(server: Server, path: str) -> None:
    before = len(Upstream.seen_auth)
    is_error, text = await call(server, path)
    assert is_error, text
    assert len(Upstream.seen_auth) == before


async def test_the_key_is_in_no_log_line_or_event(server: Server) -> None:
    await call(server, "/v1/ok")
    await call(server, "/v1/error500")
    log = server.log()
    assert '"tool":"upstream_get"' in log  # the calls were audited...
    assert_no_key(log)  # ...without the key


async def test_missing_key_is_refused_and_the_quota_is_shared(
    project: Path, venv: Venv, upstream: str, tmp_path: Path
) -> None:
    first, second = "mcp_quota-one-" + secrets.token_hex(12), "mcp_quota-two-" + secrets.token_hex(12)
    env = {
        **read_env_file(project),
        "MCP_API_KEYS": f"{first},{second}",
        "MCP_UPSTREAM_URL": upstream,
        "MCP_UPSTREAM_API_KEY": "",
        "MCP_UPSTREAM_RATE_LIMIT": "3/minute",
    }
    with running_server(venv, project, env, log_dir=tmp_path) as server:
        before = len(Upstream.seen_auth)
        texts = [await call(server, "/v1/ok", key) for key in (first, second, first)]
        for is_error, text in texts:
            assert is_error and "MCP_UPSTREAM_API_KEY" in text, text
        # Three calls by two callers used the one shared quota: the fourth is refused, whoever makes it.
        is_error, text = await call(server, "/v1/ok", second)
        assert is_error and "Rate limit reached" in text, text
        assert len(Upstream.seen_auth) == before
