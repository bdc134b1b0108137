"""node oidc-provider (tests/support/oidc_provider.mjs) as a process, and the HTTP steps a browser would take.

Start it once per test module: `OidcProvider(clients=[...]).start()`. `authorize()` runs the authorization
code flow with PKCE S256 the way a user agent would (redirects, cookies), and returns the code that the
authorization server sent to the redirect URI, so no browser and no listening callback are needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp.shared.auth import AuthorizationCodeResult

from . import stop_process
from .node import NODE_BIN, node_env, node_tool

SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
REDIRECT_URI = "http://127.0.0.1:9/callback"  # nothing listens: the code is read from the redirect
# Our server's confidential client for introspection, and a machine client for client credentials.
SERVER_CLIENT = {"client_id": "mcp-server", "client_secret": "introspection-secret-3f9a7c1e"}
MACHINE_CLIENTS = ("machine", "alice", "short-lived-machine")


def _static_clients(extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    none: dict[str, Any] = {"grant_types": [], "response_types": [], "redirect_uris": []}
    clients = [{**SERVER_CLIENT, **none}]
    clients += [
        {
            **none,
            "client_id": name,
            "client_secret": f"{name}-secret-0123456789",
            "grant_types": ["client_credentials"],
        }
        for name in MACHINE_CLIENTS
    ]
    return clients + extra


@dataclass
class OidcProvider:
    clients: list[dict[str, Any]] = field(default_factory=list)
    opaque_resources: list[str] = field(default_factory=list)
    scopes: str = "notes:read notes:write mcp:tools"
    issuer: str = ""
    process: subprocess.Popen[str] | None = None

    def start(self) -> OidcProvider:
        node_tool("node")
        env = node_env(
            {
                "OIDC_PORT": "0",
                "OIDC_DEBUG": os.environ.get("OIDC_DEBUG", ""),
                "OIDC_SCOPES": self.scopes,
                "OIDC_OPAQUE_RESOURCES": ",".join(self.opaque_resources),
                "OIDC_CLIENTS": json.dumps(_static_clients(self.clients)),
            }
        )
        self.process = subprocess.Popen(
            [str(NODE_BIN / "node"), str(SCRIPT)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None if os.environ.get("OIDC_DEBUG") else subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the script prints one line when it listens
        if not line:
            raise RuntimeError(f"oidc-provider did not start (exit {self.process.wait(timeout=10)})")
        self.issuer = json.loads(line)["issuer"]
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    @property
    def jwks_url(self) -> str:
        return self.issuer + "/jwks"

    @property
    def introspection_url(self) -> str:
        return self.issuer + "/token/introspection"

    def set_user(self, user: str, decline_once: tuple[str, ...] = ()) -> None:
        """Who logs in next, and which scopes they decline the first time they are asked."""
        response = httpx2.post(
            self.issuer + "/test/user", json={"user": user, "decline_once": list(decline_once)}, timeout=10
        )
        response.raise_for_status()

    def client_credentials(self, client: str, resource: str, scope: str) -> dict[str, Any]:
        response = httpx2.post(
            self.issuer + "/token",
            data={"grant_type": "client_credentials", "resource": resource, "scope": scope},
            auth=(client, f"{client}-secret-0123456789"),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def revoke(self, token: str, client: str) -> None:
        """Revoke a token, as the client it was issued to (RFC 7009)."""
        response = httpx2.post(
            self.issuer + "/token/revocation",
            data={"token": token},
            auth=(client, f"{client}-secret-0123456789"),
            timeout=10,
        )
        assert response.status_code == 200, response.text

    def authorize(self, url: str, redirect_uri: str) -> dict[str, str]:
        """Follow an authorization URL as a browser would; the query sent to the redirect URI
        (code, state)."""
        with httpx2.Client(timeout=10) as browser:
            for _ in range(10):
                response = browser.get(url)
                location = response.headers.get("location")
                if response.status_code not in (302, 303) or not location:
                    raise AssertionError(
                        f"authorization stopped at {url}: {response.status_code} {response.text[:300]}"
                    )
                url = urljoin(url, location)
                if url.startswith(redirect_uri):
                    query = {name: values[0] for name, values in parse_qs(urlparse(url).query).items()}
                    if "code" not in query:
                        raise AssertionError(f"no code in the redirect: {query}")
                    return query
        raise AssertionError("too many redirects")

    def code_flow(
        self, client_id: str, secret: str, redirect_uri: str, scope: str, resource: str | None = None
    ) -> dict[str, Any]:
        """Authorization code + PKCE S256 for a static client; the token response."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": secrets.token_urlsafe(8),
        }
        if resource:
            params["resource"] = resource
        url = str(httpx2.URL(self.issuer + "/auth", params=params))
        code = self.authorize(url, redirect_uri)["code"]
        token = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        if resource:
            token["resource"] = resource
        token.update(client_id=client_id, client_secret=secret)  # client_secret_post
        response = httpx2.post(self.issuer + "/token", data=token, timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())


class Browser:
    """The Python SDK's redirect and callback handlers, answered by following the redirects over HTTP."""

    def __init__(self, oidc: OidcProvider) -> None:
        self.oidc = oidc  # only its authorize() is used: it follows redirects as a browser would
        self.asked: list[str] = []  # the scope each authorization asked for
        self.query: dict[str, str] = {}

    async def redirect(self, url: str) -> None:
        self.asked.append(httpx2.URL(url).params.get("scope", ""))
        self.query = self.oidc.authorize(url, REDIRECT_URI)

    async def callback(self) -> AuthorizationCodeResult:
        return AuthorizationCodeResult(
            code=self.query["code"], state=self.query.get("state"), iss=self.query.get("iss")
        )


class MemoryStorage:
    """The SDK client's token storage, in memory."""

    def __init__(self) -> None:
        self.tokens: Any = None
        self.client: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client

    async def set_client_info(self, client_info: Any) -> None:
        self.client = client_info
