"""The development authorization server of an OAuth render, as its README runs it: `<slug> dev-auth`
starts the project's dev-auth/server.mjs (node oidc-provider, the version pinned here) and prints the
.env lines; `serve` runs with them; then the Python SDK's and the TypeScript SDK's clients complete MCP's
OAuth flow unaided (401, protected-resource metadata, dynamic registration, PKCE, resource indicator,
JWT access token), a machine client uses client credentials, and loopback is the only place it runs.

One stand-in: the project's dev-auth/node_modules is a link to this repository's node_modules (the
same oidc-provider and jose versions, checked below) instead of the `npm ci` that dev-auth runs once.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientMetadata

from support import (
    TEMPLATE_ROOT,
    Server,
    Venv,
    clean_env,
    free_port,
    http_client,
    package_of,
    read_env_file,
    running_server,
    stop_process,
    text_of,
    wait_for,
)
from support.node import NODE_BIN, node_env, node_tool
from support.oidc import REDIRECT_URI, Browser, MemoryStorage, OidcProvider

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    project = rendered("oauth")
    pinned = json.loads((project / "dev-auth" / "package.json").read_text())["dependencies"]
    here = json.loads((TEMPLATE_ROOT / "package-lock.json").read_text())["packages"]
    assert pinned == {name: here[f"node_modules/{name}"]["version"] for name in pinned}
    modules = project / "dev-auth" / "node_modules"
    if not modules.exists():
        modules.symlink_to(TEMPLATE_ROOT / "node_modules")
    return project


@pytest.fixture(scope="module")
def dev_auth(project: Path, venv: Venv) -> Iterator[dict[str, str]]:
    """`dev-auth` running; the settings it printed (MCP_* lines) and the machine client's secret."""
    node_tool("node")
    command, _ = package_of(project)
    port = free_port()
    env = node_env({**clean_env(), "MCP_RESOURCE_URL": f"http://127.0.0.1:{port}/mcp"})
    env["PATH"] = f"{NODE_BIN}:{env['PATH']}"
    process = subprocess.Popen(
        [venv.bin(command), "dev-auth", "--port", "0"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    printed: dict[str, str] = {"port": str(port)}
    for line in process.stdout:
        if line.startswith("MCP_"):
            name, _, value = line.strip().partition("=")
            printed[name] = value
        if "client_secret " in line:
            printed["machine_secret"] = line.rsplit(" ", 1)[1].strip()
            break
    assert "MCP_OAUTH_ISSUER" in printed, process.stderr.read() if process.stderr else ""
    yield printed
    stop_process(process)
    # node goes with it (its stdin closes), although dev-auth was ended by a signal it does not handle.
    wait_for(
        lambda: not answers(printed["MCP_OAUTH_ISSUER"] + "/jwks"), what="the issuer to stop", timeout=15
    )


def answers(url: str) -> bool:
    try:
        httpx2.get(url, timeout=2)
    except httpx2.TransportError:
        return False
    return True


@pytest.fixture(scope="module")
def server(project: Path, venv: Venv, dev_auth: dict[str, str]) -> Iterator[Server]:
    env = {
        **read_env_file(project),
        **{k: v for k, v in dev_auth.items() if k.startswith("MCP_")},
        "MCP_SECURITY_EVENTS_URL": "memory://",
    }
    with running_server(venv, project, env, port=int(dev_auth["port"])) as server:
        yield server


def test_it_prints_the_env_lines_for_this_project(dev_auth: dict[str, str], server: Server) -> None:
    issuer = dev_auth["MCP_OAUTH_ISSUER"]
    assert issuer.startswith("http://127.0.0.1:")
    assert dev_auth["MCP_OAUTH_JWKS_URL"] == issuer + "/jwks"
    assert dev_auth["MCP_RESOURCE_URL"] == server.url
    metadata = httpx2.get(issuer + "/.well-known/openid-configuration", timeout=10).json()
    assert {"notes:read", "notes:write"} <= set(metadata["scopes_supported"])
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "registration_endpoint" in metadata and "client_credentials" in metadata["grant_types_supported"]


async def test_the_python_sdk_client_signs_in_unaided(server: Server, dev_auth: dict[str, str]) -> None:
    storage = MemoryStorage()
    browser = Browser(OidcProvider(issuer=dev_auth["MCP_OAUTH_ISSUER"]))
    provider = OAuthClientProvider(
        server_url=server.url,
        client_metadata=OAuthClientMetadata(
            client_name="python-sdk-dev-auth",
            redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
            grant_types=["authorization_code"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,  # type: ignore[arg-type]
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    async with http_client(server.url, auth=provider) as client:
        whoami = text_of(await client.call_tool("whoami", {}))
        saved = await client.call_tool("add_note", {"text": "written through dev-auth"})
        listed = text_of(await client.call_tool("list_notes", {}))
    assert whoami.startswith("principal: user:developer\n"), whoami
    assert not saved.is_error and "written through dev-auth" in listed
    assert set(storage.tokens.scope.split()) == {"notes:read", "notes:write"}


def test_the_typescript_sdk_client_signs_in_unaided(server: Server) -> None:
    script = TEMPLATE_ROOT / "tests" / "support" / "ts_oauth_client.mjs"
    result = subprocess.run(
        [
            str(NODE_BIN / "node"),
            str(script),
            server.url,
            "add_note",
            json.dumps({"text": "from typescript"}),
        ],
        cwd=TEMPLATE_ROOT,
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["whoami"].startswith("principal: user:developer\n"), report
    assert not report["is_error"] and "Saved note" in report["result"], report
    assert 401 in report["statuses"] and report["resource"] == server.url


async def test_a_machine_client_uses_client_credentials(server: Server, dev_auth: dict[str, str]) -> None:
    response = httpx2.post(
        dev_auth["MCP_OAUTH_ISSUER"] + "/token",
        data={"grant_type": "client_credentials", "resource": server.url, "scope": "notes:read"},
        auth=("dev-machine", dev_auth["machine_secret"]),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    async with http_client(server.url, response.json()["access_token"]) as client:
        whoami = text_of(await client.call_tool("whoami", {}))
    assert whoami.startswith("principal: client:dev-machine\nscopes: notes:read\n"), whoami
    other = httpx2.post(
        dev_auth["MCP_OAUTH_ISSUER"] + "/token",
        data={"grant_type": "client_credentials", "resource": "https://elsewhere.example/mcp"},
        auth=("dev-machine", dev_auth["machine_secret"]),
        timeout=10,
    )
    assert other.status_code == 400 and other.json()["error"] == "invalid_target"


def test_it_runs_on_loopback_only_and_serve_refuses_it_elsewhere(
    project: Path, venv: Venv, dev_auth: dict[str, str]
) -> None:
    command, _ = package_of(project)
    env = node_env({"MCP_RESOURCE_URL": "http://127.0.0.1:9/mcp"})
    refused = venv.run(venv.bin(command), "dev-auth", "--host", "0.0.0.0", cwd=project, env=env, timeout=60)  # noqa: S104
    assert refused.returncode == 2 and "loopback only" in refused.stderr, refused.stderr
    direct = subprocess.run(
        [str(NODE_BIN / "node"), "server.mjs"],
        cwd=project / "dev-auth",
        env=node_env({"DEV_AUTH_HOST": "0.0.0.0", "DEV_AUTH_RESOURCE": "http://127.0.0.1:9/mcp"}),  # noqa: S104
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert direct.returncode == 2 and "loopback only" in direct.stderr, direct.stderr
    settings = {k: v for k, v in dev_auth.items() if k.startswith("MCP_")}
    serve = venv.run(
        venv.bin(command),
        "serve",
        "--host",
        "0.0.0.0",  # noqa: S104 - the address serve must refuse with a loopback issuer
        "--port",
        str(free_port()),
        cwd=project,
        env={**read_env_file(project), **settings},
        timeout=60,
    )
    assert serve.returncode == 2, serve.stdout + serve.stderr
    assert "MCP_OAUTH_ISSUER" in serve.stderr and "serves other machines" in serve.stderr, serve.stderr
