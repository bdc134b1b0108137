"""TLS and mutual TLS through uvicorn, with certificates from trustme (a real CA made for tests).

With MCP_TLS_CLIENT_CA set, a client that has no certificate signed by that CA cannot connect at all:
the TLS handshake fails before any HTTP request reaches the application.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import trustme

from support import (
    Server,
    Venv,
    client_key,
    http_client,
    jsonrpc,
    package_of,
    read_env_file,
    running_server,
    text_of,
)
from support.perimeter import assert_security_headers

pytestmark = pytest.mark.anyio


@dataclass
class Pki:
    server_ca: trustme.CA
    client_ca: trustme.CA
    files: dict[str, str]

    def context(self, client_cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.server_ca.configure_trust(context)
        if client_cert is not None:
            client_cert.configure_cert(context)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    leaf = server_ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "cert": folder / "server-chain.pem",
        "key": folder / "server-key.pem",
        "client_ca": folder / "client-ca.pem",
    }
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    client_ca.cert_pem.write_to_path(str(files["client_ca"]))
    return Pki(server_ca, client_ca, {name: str(path) for name, path in files.items()})


def tls_env(project: Path, pki: Pki, *, mutual: bool) -> dict[str, str]:
    env = {
        **read_env_file(project),
        "MCP_TLS_CERTFILE": pki.files["cert"],
        "MCP_TLS_KEYFILE": pki.files["key"],
        "MCP_SECURITY_EVENTS_URL": "memory://",
    }
    if mutual:
        env["MCP_TLS_CLIENT_CA"] = pki.files["client_ca"]
    return env


@pytest.fixture(scope="module")
def tls_server(rendered: Callable[[str], Path], venv: Venv, pki: Pki) -> Iterator[Server]:
    project = rendered("both")
    with running_server(
        venv,
        project,
        tls_env(project, pki, mutual=False),
        scheme="https",
        ready_kwargs={"verify": pki.context()},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def client_cert(pki: Pki) -> trustme.LeafCert:
    return pki.client_ca.issue_cert("client@example.com")


@pytest.fixture(scope="module")
def mtls_server(
    rendered: Callable[[str], Path], venv: Venv, pki: Pki, client_cert: trustme.LeafCert
) -> Iterator[Server]:
    project = rendered("both")
    with running_server(
        venv,
        project,
        tls_env(project, pki, mutual=True),
        scheme="https",
        ready_kwargs={"verify": pki.context(client_cert)},
    ) as server:
        yield server


async def test_tls_serves_mcp_with_hsts(tls_server: Server, pki: Pki) -> None:
    response = httpx2.get(tls_server.base + "/health", verify=pki.context(), timeout=10)
    assert response.status_code == 200
    assert_security_headers(response, tls=True)
    assert response.headers["strict-transport-security"].startswith("max-age=")
    refused = httpx2.post(tls_server.url, json=jsonrpc("tools/list"), verify=pki.context(), timeout=10)
    assert refused.status_code == 401
    assert_security_headers(refused, tls=True)
    async with http_client(tls_server.url, client_key(tls_server.env), verify=pki.context()) as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error, text_of(result)


def test_plain_http_to_the_tls_port_gets_nothing(tls_server: Server) -> None:
    with pytest.raises(httpx2.TransportError):
        httpx2.get(f"http://127.0.0.1:{tls_server.port}/health", timeout=10)


async def test_mutual_tls_client_with_a_certificate_from_the_client_ca_connects(
    mtls_server: Server, pki: Pki, client_cert: trustme.LeafCert
) -> None:
    key = client_key(mtls_server.env)
    async with http_client(mtls_server.url, key, verify=pki.context(client_cert)) as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error, text_of(result)


@pytest.mark.parametrize("who", ["no certificate", "certificate from another CA"])
def test_mutual_tls_refuses_a_client_without_a_certificate_from_the_client_ca(
    mtls_server: Server, pki: Pki, who: str
) -> None:
    cert = trustme.CA().issue_cert("intruder@example.com") if who != "no certificate" else None
    requests_before = mtls_server.log().count('"POST /mcp')
    with pytest.raises(httpx2.TransportError):
        httpx2.post(
            mtls_server.url,
            json=jsonrpc("tools/list"),
            verify=pki.context(cert),
            timeout=10,
            headers={"Authorization": f"Bearer {client_key(mtls_server.env)}"},
        )
    # The request never reached the application.
    assert mtls_server.log().count('"POST /mcp') == requests_before


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("MCP_TLS_CERTFILE", "MCP_TLS_CERTFILE/MCP_TLS_KEYFILE cannot be loaded"),
        ("MCP_TLS_CLIENT_CA", "MCP_TLS_CLIENT_CA cannot be loaded"),
    ],
)
def test_unloadable_tls_files_stop_check_and_serve_with_a_message(
    rendered: Callable[[str], Path], venv: Venv, pki: Pki, tmp_path: Path, setting: str, expected: str
) -> None:
    project = rendered("both")
    not_pem = tmp_path / "not-a-certificate.pem"
    not_pem.write_text("hello")
    env = {**tls_env(project, pki, mutual=True), setting: str(not_pem)}
    command, _ = package_of(project)
    for args in (("check",), ("serve", "--transport", "http", "--port", "1")):
        result = venv.run(venv.bin(command), *args, cwd=project, env=env, timeout=60)
        assert result.returncode != 0
        assert expected in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
