"""JWT access tokens verified against the issuer's JWKS (PyJWT).

Checked on every JWT: `typ: at+jwt` (RFC 9068: an ID token is not an access token), the algorithm
against an asymmetric allow-list (never `none`, never HMAC), the signature with the issuer's key named by
`kid`, then `iss`, `aud` (RFC 8707: this server's resource URL), `exp` and `nbf` with a small leeway.
The token itself is never kept, logged or forwarded.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import jwt
from jwt import PyJWK, PyJWKClient
from mcp.server.auth.provider import AccessToken

from ...identity.keys import KEY_PREFIX, ApiKeyVerifier, parse_keys
from ..common import CredentialRejectedError
from .claims import LEEWAY_SECONDS, check_audience, named_token

if TYPE_CHECKING:
    from .introspection import Introspection

JWKS_LIFESPAN_SECONDS = 300
# An unknown kid (or a failed fetch) may trigger a refetch at most this often: a flood of made-up
# kids cannot turn this server into a load generator against the authorization server.
JWKS_REFETCH_INTERVAL_SECONDS = 30
JWKS_TIMEOUT_SECONDS = 5
# RFC 9068 section 4: `typ` of a JWT access token (compared case-insensitively).
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
log = logging.getLogger(__package__)  # one logger for the oauth package, as when it was one module

# PyJWT's exceptions -> the reason recorded in the security event (never token content).
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidIssuedAtError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.DecodeError, "malformed_token"),
)


class JwksKeys:
    """The issuer's signing keys by kid: fetched once per lifespan, and refetched for an unknown kid
    (the issuer may have rotated its keys) at most once per interval."""

    def __init__(
        self,
        url: str,
        *,
        lifespan: float = JWKS_LIFESPAN_SECONDS,
        refetch_interval: float = JWKS_REFETCH_INTERVAL_SECONDS,
    ) -> None:
        # PyJWKClient fetches and parses; the caching policy is ours, so it is one rule in one place.
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=JWKS_TIMEOUT_SECONDS)
        self._lifespan = lifespan
        self._interval = refetch_interval
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -math.inf
        self._failed_at = -math.inf
        self._refetched_at = -math.inf
        self._lock = threading.Lock()  # verification runs in worker threads

    def key_for(self, kid: str) -> PyJWK:
        with self._lock:
            now = time.monotonic()
            fetched = False
            if now - self._fetched_at > self._lifespan and now - self._failed_at >= self._interval:
                self._fetch(now)
                fetched = True
            if kid not in self._keys and not fetched and now - self._refetched_at >= self._interval:
                self._refetched_at = now
                self._fetch(now)
            key = self._keys.get(kid)
        if key is not None:
            return key
        raise CredentialRejectedError("unknown_key" if self._keys else "jwks_unavailable")

    def _fetch(self, now: float) -> None:
        try:
            keys = self._client.get_signing_keys(refresh=True)
        except jwt.PyJWTError as exc:
            # Keep the keys we have: an outage at the issuer must not log everyone out at once.
            self._failed_at = now
            log.warning("JWKS fetch failed: %s", type(exc).__name__)
        else:
            self._keys = {str(key.key_id): key for key in keys}
            self._fetched_at = now


class JwtVerifier:
    """The SDK's TokenVerifier for JWT access tokens; `check` also says why a token was refused."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        algorithms: list[str],
        admin_keys: str = "",
        jwks: JwksKeys | None = None,
        require_at_jwt: bool = True,
        allow_missing_audience: bool = False,
        groups_claim: str = "groups",
        introspection: Introspection | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.jwks = jwks or JwksKeys(jwks_url)
        self.require_at_jwt = require_at_jwt
        self.allow_missing_audience = allow_missing_audience
        self.groups_claim = groups_claim
        self.introspection = introspection
        # Operators read /security/events with an admin API key in this mode too.
        self.admin = ApiKeyVerifier([], parse_keys(admin_keys, "MCP_ADMIN_API_KEYS"))

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self.check(token)
        except CredentialRejectedError:
            return None

    async def check(self, token: str) -> AccessToken:
        if token.count(".") != 2:
            admin = await self.admin.verify_token(token)
            if admin is not None:
                return admin
            # Our own keys (a mistyped admin key) never go to the authorization server.
            if self.introspection is None or token.startswith(KEY_PREFIX):
                raise CredentialRejectedError("not_a_jwt")
            return await self.introspection.check(token)
        return await anyio.to_thread.run_sync(self._check_jwt, token)

    def _check_jwt(self, token: str) -> AccessToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise CredentialRejectedError("malformed_token") from None
        # Refused before any key lookup: `none`, HMAC and anything else off the allow-list.
        if header.get("alg") not in self.algorithms:
            raise CredentialRejectedError("algorithm_not_allowed")
        if self.require_at_jwt and str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise CredentialRejectedError("not_an_access_token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise CredentialRejectedError("missing_kid")
        key = self.jwks.key_for(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                # The audience is checked below, so that a missing `aud` has its own reason and opt-in.
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            reason = next((name for kind, name in _REASONS if isinstance(exc, kind)), "invalid_token")
            raise CredentialRejectedError(reason) from None
        check_audience(claims.get("aud"), self.audience, self.allow_missing_audience)
        return named_token(claims, self.audience, self.groups_claim)
