"""`check`: the configuration compared with what the authorization server publishes."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import httpx2

from .jwt_verifier import JWKS_TIMEOUT_SECONDS

_KEY_ALGORITHMS = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC:P-256": {"ES256"},
    "EC:P-384": {"ES384"},
    "EC:P-521": {"ES512"},
    "OKP:Ed25519": {"EdDSA"},
    "OKP:Ed448": {"EdDSA"},
}


def metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 (well-known inserted before the issuer's path), then OpenID Connect discovery."""
    parsed = urlparse(issuer.rstrip("/"))
    origin = f"{parsed.scheme}://{parsed.netloc}"
    return [
        f"{origin}/.well-known/oauth-authorization-server{parsed.path}",
        f"{origin}{parsed.path}/.well-known/openid-configuration",
    ]


def authorization_server_problems(
    *, issuer: str, jwks_url: str, algorithms: list[str], introspection_url: str = ""
) -> list[str]:
    """Ask the issuer for its metadata and keys: what a token from it would be refused for, with the fix."""
    with httpx2.Client(timeout=JWKS_TIMEOUT_SECONDS) as client:
        metadata, tried = _fetch_metadata(client, issuer)
        if metadata is None:
            return [
                "MCP_OAUTH_ISSUER: no authorization server metadata (RFC 8414 or OpenID discovery) at "
                + "; ".join(tried)
                + ": check the URL and that the server is up"
            ]
        problems = _metadata_problems(
            metadata, issuer=issuer, jwks_url=jwks_url, introspection_url=introspection_url
        )
        try:
            keys = client.get(jwks_url, headers={"Accept": "application/json"}).json().get("keys", [])
        except (httpx2.HTTPError, ValueError, AttributeError) as exc:
            return [*problems, f"MCP_OAUTH_JWKS_URL: the keys cannot be fetched ({type(exc).__name__})"]
    usable = _usable_algorithms(keys)
    if not usable & set(algorithms):
        problems.append(
            f"MCP_OAUTH_ALGORITHMS is {','.join(algorithms)} but the authorization server's signing keys "
            f"can only be used with {', '.join(sorted(usable)) or 'nothing this server verifies'}: "
            "add those to MCP_OAUTH_ALGORITHMS"
        )
    return problems


def _fetch_metadata(client: httpx2.Client, issuer: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The first metadata document found (metadata_urls' order), and each URL tried without one."""
    tried: list[str] = []
    for url in metadata_urls(issuer):
        try:
            response = client.get(url, headers={"Accept": "application/json"})
            body = response.json() if response.status_code == 200 else None
        except (httpx2.HTTPError, ValueError) as exc:
            tried.append(f"{url} ({type(exc).__name__})")
            continue
        if isinstance(body, dict):
            return body, tried
        tried.append(f"{url} (HTTP {response.status_code})")
    return None, tried


def _metadata_problems(
    metadata: dict[str, Any], *, issuer: str, jwks_url: str, introspection_url: str
) -> list[str]:
    """Settings that differ from what the authorization server's metadata says."""
    problems: list[str] = []
    published = metadata.get("issuer")
    if published != issuer:
        problems.append(
            f"MCP_OAUTH_ISSUER is {issuer!r} but the authorization server's metadata says issuer "
            f"{published!r}; tokens carry the latter in `iss`: set MCP_OAUTH_ISSUER={published} exactly"
        )
    if metadata.get("jwks_uri") != jwks_url:
        problems.append(
            f"MCP_OAUTH_JWKS_URL is {jwks_url!r} but the authorization server publishes its keys at "
            f"{metadata.get('jwks_uri')!r}: set MCP_OAUTH_JWKS_URL to that"
        )
    if introspection_url and metadata.get("introspection_endpoint") not in (None, introspection_url):
        problems.append(
            f"MCP_OAUTH_INTROSPECTION_URL is {introspection_url!r} but the authorization server's "
            f"introspection endpoint is {metadata.get('introspection_endpoint')!r}: set it to that"
        )
    return problems


def _usable_algorithms(keys: object) -> set[str]:
    """The algorithms the JWKS's signing keys can be used with (by key type and curve, and `alg`)."""
    usable: set[str] = set()
    for key in keys if isinstance(keys, list) else []:
        if not isinstance(key, dict) or key.get("use", "sig") != "sig":
            continue
        kind = f"{key.get('kty')}:{key['crv']}" if "crv" in key else str(key.get("kty"))
        by_type = _KEY_ALGORITHMS.get(kind, set())
        usable |= {key["alg"]} & by_type if "alg" in key else by_type
    return usable
