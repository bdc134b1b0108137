"""A tiny OAuth 2.1 authorization server on loopback, for the OAuth tests (test code, not a mock).

It signs RS256 access tokens with a real RSA key, serves its metadata (RFC 8414), its JWKS and a token
endpoint for the client_credentials grant, and counts JWKS fetches so tests can see the server's cache.
`mint()` signs any claims the tests want, including the bad ones.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(default_factory=new_rsa_key)

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}


@dataclass
class Client:
    secret: str
    scopes: frozenset[str]


class AuthServer:
    def __init__(self) -> None:
        self.keys = [SigningKey("key-1")]
        self.clients = {"test-client": Client("test-client-secret", frozenset({"mcp:tools", "notes:read"}))}
        self.jwks_fetches = 0
        self.token_requests: list[dict[str, str]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return self.issuer + "/jwks.json"

    def start(self) -> AuthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> AuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self, resource_url: str) -> dict[str, str]:
        """What a rendered server at `resource_url` needs to take this server's tokens."""
        return {
            "MCP_OAUTH_ISSUER": self.issuer,
            "MCP_OAUTH_JWKS_URL": self.jwks_url,
            "MCP_RESOURCE_URL": resource_url,
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.jwks_url,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["code"],
            "scopes_supported": ["mcp:tools", "notes:read"],
        }

    def claims(self, audience: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "test-client",
            "client_id": "test-client",
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": "mcp:tools",
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def mint(
        self,
        audience: str,
        *,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        key = key or self.keys[0]
        return jwt.encode(
            self.claims(audience, **overrides),
            key.private,
            algorithm="RS256",
            headers={"kid": key.kid, "typ": "at+jwt", **(headers or {})},  # RFC 9068
        )

    def issue(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        """The token endpoint: client_credentials only; the token's audience is the `resource` asked for."""
        self.token_requests.append(form)
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        client = self.clients.get(client_id)
        if client is None or client.secret != secret:
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if not form.get("resource"):
            return 400, {"error": "invalid_target", "error_description": "resource (RFC 8707) is required"}
        asked = set(form.get("scope", "").split()) or set(client.scopes)
        granted = " ".join(sorted(asked & client.scopes))
        token = self.mint(form["resource"], sub=client_id, client_id=client_id, scope=granted)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": granted}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _handler_for(server: AuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _json(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if self.path == "/.well-known/oauth-authorization-server":
                self._json(200, server.metadata())
            elif self.path == "/jwks.json":
                server.jwks_fetches += 1
                self._json(200, {"keys": [key.jwk() for key in server.keys]})
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            if self.path != "/token":
                self._json(404, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            basic = None
            header = self.headers.get("Authorization", "")
            if header.lower().startswith("basic "):
                from urllib.parse import unquote

                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                basic = (unquote(user), unquote(password))
            self._json(*server.issue(form, basic))

    return Handler
