"""RFC 9728 protected resource metadata: what clients are told about this resource and its scopes."""

from __future__ import annotations

from urllib.parse import urlparse

from mcp.server.auth.routes import build_resource_metadata_url
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .claims import RESERVED_SCOPES

METADATA_PATH = "/.well-known/oauth-protected-resource"
# Never advertised: refresh tokens are the client's business with its authorization server.
UNADVERTISED_SCOPES = RESERVED_SCOPES | {"offline_access"}


def advertised_scopes(required: list[str], used: frozenset[str]) -> list[str]:
    """What clients are told to ask for: the required scopes and every scope a tool needs, no more."""
    return sorted((set(required) | used) - UNADVERTISED_SCOPES)


def protected_resource_routes(
    resource_url: str, issuer: str, scopes: list[str]
) -> tuple[list[BaseRoute], str]:
    """RFC 9728 metadata at the path-suffixed URL (advertised in 401s) and at the root well-known URL."""
    resource = AnyHttpUrl(resource_url)
    metadata = ProtectedResourceMetadata(
        resource=resource, authorization_servers=[AnyHttpUrl(issuer)], scopes_supported=scopes or None
    ).model_dump(mode="json", exclude_none=True)
    # Exactly as configured: clients compare these strings with the token audience and the
    # issuer's own metadata, and URL normalisation would add a trailing slash to a bare host.
    metadata.update(resource=resource_url, authorization_servers=[issuer])

    async def endpoint(request: Request) -> Response:
        return JSONResponse(metadata)

    metadata_url = str(build_resource_metadata_url(resource))
    paths = dict.fromkeys([urlparse(metadata_url).path, METADATA_PATH])
    return [Route(path, endpoint, methods=["GET"]) for path in paths], metadata_url


def secure_url(url: str) -> bool:
    """https, or plain http to a loopback address (a local test issuer): nothing else is trusted."""
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return True
    return parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")
