"""OAuth 2.1 resource server: JWT access tokens verified against the issuer's JWKS (PyJWT), opaque
tokens through the issuer's introspection endpoint (RFC 7662) when one is configured.

One job per module: `jwt_verifier.py` (the JWKS and the checks on every JWT), `introspection.py`
(RFC 7662), `claims.py` (what a verified token's claims mean here: audience, principal, scopes),
`metadata.py` (RFC 9728: what clients are told) and `issuer_check.py` (`check`: the settings compared
with what the authorization server publishes).
The token itself is never kept, logged or forwarded (except to the issuer's own introspection endpoint).
"""

# The names importers used when this was one module (credentials.py, the tests) stay importable here.
from .claims import LEEWAY_SECONDS, RESERVED_SCOPES, check_audience, named_token, scopes_of
from .introspection import (
    ACCEPTED_TOKEN_TYPES,
    INTROSPECTION_CACHE_SIZE,
    INTROSPECTION_TIMEOUT_SECONDS,
    Introspection,
)
from .issuer_check import authorization_server_problems, metadata_urls
from .jwt_verifier import (
    ACCESS_TOKEN_TYPES,
    JWKS_LIFESPAN_SECONDS,
    JWKS_REFETCH_INTERVAL_SECONDS,
    JWKS_TIMEOUT_SECONDS,
    JwksKeys,
    JwtVerifier,
)
from .metadata import (
    METADATA_PATH,
    UNADVERTISED_SCOPES,
    advertised_scopes,
    protected_resource_routes,
    secure_url,
)

__all__ = [
    "ACCEPTED_TOKEN_TYPES",
    "ACCESS_TOKEN_TYPES",
    "INTROSPECTION_CACHE_SIZE",
    "INTROSPECTION_TIMEOUT_SECONDS",
    "JWKS_LIFESPAN_SECONDS",
    "JWKS_REFETCH_INTERVAL_SECONDS",
    "JWKS_TIMEOUT_SECONDS",
    "LEEWAY_SECONDS",
    "METADATA_PATH",
    "RESERVED_SCOPES",
    "UNADVERTISED_SCOPES",
    "Introspection",
    "JwksKeys",
    "JwtVerifier",
    "advertised_scopes",
    "authorization_server_problems",
    "check_audience",
    "metadata_urls",
    "named_token",
    "protected_resource_routes",
    "scopes_of",
    "secure_url",
]
