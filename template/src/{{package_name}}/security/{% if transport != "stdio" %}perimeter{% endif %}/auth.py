"""Bearer authentication for HTTP: every path but /health and the OAuth metadata needs a credential."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..audit.events import SecurityEvents
from ..identity.keys import KeyAccessToken
from ..identity.principal import ADMIN_SCOPE, ALL_TOOL_SCOPES, Principal
from .common import CredentialRejectedError, NamedAccessToken, client_address, refusal, send_json
from .known_credentials import KnownCredentials

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health"})
PUBLIC_PREFIXES = ("/.well-known/oauth-protected-resource",)


def is_public_path(path: str) -> bool:
    """Paths served without a credential: liveness and the OAuth metadata."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


ADMIN_PATHS = frozenset({"/security/events", "/metrics"})
QUERY_CREDENTIALS = frozenset({"api_key", "apikey", "key", "access_token", "token", "bearer", "auth"})
MAX_CREDENTIAL_LENGTH = 8_192
# Set by the failure block (blocking.py) for a blocked address whose credential it recalled: no new check.
RECALLED = "recalled_access"
# What a client is told for each refusal reason: enough to fix its own request, nothing about ours.
REJECTION_MESSAGES = {
    "expired": "The access token has expired; get a new one.",
    "not_yet_valid": "The access token is not valid yet.",
    "wrong_audience": "The access token was issued for another resource.",
    "wrong_issuer": "The access token was issued by an authorization server this server does not trust.",
    "algorithm_not_allowed": "The access token's signing algorithm is not accepted.",
    "jwks_unavailable": "The authorization server's keys cannot be fetched; try again later.",
    "not_an_access_token": "Not an access token: RFC 9068 access tokens have typ at+jwt.",  # nosec B105
    "missing_audience": "The access token names no audience; ask for one with the resource parameter.",
    "inactive_token": "The token is not active (revoked, expired or unknown).",  # nosec B105
    "introspection_unavailable": "The authorization server cannot check the token now; try again later.",
}


@runtime_checkable
class ExplainingVerifier(Protocol):
    """A TokenVerifier that can also say why it refused (raises CredentialRejectedError)."""

    async def check(self, token: str) -> AccessToken: ...


def _query_names(scope: Scope) -> set[str]:
    query = scope.get("query_string", b"").decode("latin-1")
    return {name.lower() for name, _ in parse_qsl(query)}


def carries_credential(scope: Scope) -> bool:
    """Whether the request presents anything as a credential (a header, or one put in the URL).

    A request without one is an OAuth client's first step, never a guess: it is not counted as a
    failed login and always gets the 401 challenge (blocking.py)."""
    has_header = Headers(scope=scope).get("authorization") is not None
    return has_header or bool(_query_names(scope) & QUERY_CREDENTIALS)


def bearer_token(scope: Scope) -> str | None:
    """The credential of a well-formed `Authorization: Bearer <credential>` header, else None."""
    header = Headers(scope=scope).get("authorization")
    if header is None:
        return None
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or len(credential) > MAX_CREDENTIAL_LENGTH:
        return None
    return credential


def principal_from(token: AccessToken) -> Principal:
    if isinstance(token, NamedAccessToken):  # OAuth: `user:<sub>` or `client:<client_id>`
        return Principal(
            id=token.principal_id,
            scopes=frozenset(token.scopes),
            client_id=token.client_id,
            kind=token.principal_id.split(":", 1)[0],
            groups=frozenset(token.groups),
        )
    groups = frozenset(token.groups) if isinstance(token, KeyAccessToken) else frozenset()
    return Principal(id=token.subject or token.client_id, scopes=frozenset(token.scopes), groups=groups)


class BearerAuth:
    """401 with WWW-Authenticate for a missing or bad credential; 403 for a credential without the scope."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier,
        events: SecurityEvents,
        *,
        resource_metadata_url: str | None = None,
        required_scopes: frozenset[str] = frozenset(),
        challenge_scopes: frozenset[str] = frozenset(),
        credential: str = "key",
        known: KnownCredentials | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        # Asked once: an isinstance check against a runtime Protocol costs microseconds on every request.
        self._check = verifier.check if isinstance(verifier, ExplainingVerifier) else None
        self.events = events
        self.known = known or KnownCredentials()
        self.resource_metadata_url = resource_metadata_url
        self.required_scopes = required_scopes
        # What a 401 tells an OAuth client to ask for: the required scopes and the read-only items'
        # (a write scope comes later, through a 403 insufficient_scope at first use).
        self.challenge_scopes = challenge_scopes | required_scopes
        self.credential = credential  # what a request without one is told to send: key or access token

    def _challenge(
        self, error: str | None = None, description: str | None = None, scope: str | None = None
    ) -> str:
        return bearer_challenge(error, description, scope, self.resource_metadata_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or is_public_path(path):
            await self.app(scope, receive, send)
            return
        client = client_address(scope)
        token = await self._authenticate(scope, send, client)
        if token is None:
            return
        principal = principal_from(token)
        if not await self._authorize(path, principal, send, client):
            return
        scope.setdefault("state", {})["principal"] = principal
        # The SDK's own session-ownership check compares this with the session's creator (sessions.py).
        scope["user"] = AuthenticatedUser(token)
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope, send: Send, client: str) -> AccessToken | None:
        """The caller's verified token, or None once the 401 has been sent."""
        if _query_names(scope) & QUERY_CREDENTIALS:
            await self._unauthorized(
                send,
                client,
                "credential_in_query",
                "Send the credential in the Authorization header, never in the URL.",
                error="invalid_request",
            )
            return None
        if Headers(scope=scope).get("authorization") is None:
            await self._unauthorized(
                send,
                client,
                "missing_credential",
                f"Send Authorization: Bearer <{self.credential}>.",
                error=None,
            )
            return None
        credential = bearer_token(scope)
        if credential is None:
            await self._unauthorized(
                send,
                client,
                "malformed_header",
                "Use the form Authorization: Bearer <credential>.",
                error="invalid_request",
            )
            return None
        recalled: AccessToken | None = scope.get("state", {}).pop(RECALLED, None)
        if recalled is not None:
            return recalled
        try:
            token = await self._verify(credential)
        except CredentialRejectedError as rejected:
            message = REJECTION_MESSAGES.get(rejected.reason, "The credential is not valid.")
            await self._unauthorized(send, client, rejected.reason, message)
            return None
        self.known.remember(client, credential, token)
        return token

    async def _authorize(self, path: str, principal: Principal, send: Send, client: str) -> bool:
        """Whether the principal may use the path; if not, the 403 has been sent."""
        needed = {ADMIN_SCOPE} if path in ADMIN_PATHS else set(self.required_scopes)
        allowed = (
            principal.is_admin
            if path in ADMIN_PATHS
            else (
                ALL_TOOL_SCOPES in principal.scopes
                or (needed <= principal.scopes and not _admin_only(principal))
            )
        )
        if not allowed:
            await self._forbidden(send, client, path, principal, " ".join(sorted(needed)))
        return allowed

    async def _forbidden(self, send: Send, client: str, path: str, principal: Principal, wanted: str) -> None:
        await self.events.record(
            "authorization_denied",
            "medium",
            principal.id,
            path=path,
            required_scope=wanted,
            client=client,
        )
        await send_json(
            send,
            403,
            refusal(
                "insufficient_scope",
                f"This credential lacks the scope for {path}: {wanted or 'tool access'}.",
            ),
            {"WWW-Authenticate": self._challenge("insufficient_scope", "insufficient scope", wanted or None)},
        )

    async def _verify(self, credential: str) -> AccessToken:
        try:
            if self._check is not None:
                return await self._check(credential)
            token = await self.verifier.verify_token(credential)
        except CredentialRejectedError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a library raises on a crafted credential
            # e.g. PyJWT's TypeError for a JWT whose alg does not fit the key its kid names: the
            # credential is bad, so it is an invalid_token 401 (counted, one event), never a 500.
            log.warning("credential verification failed unexpectedly: %s", type(exc).__name__)
            raise CredentialRejectedError("invalid_token") from None
        if token is None:
            raise CredentialRejectedError("unknown_credential")
        return token

    async def _unauthorized(
        self, send: Send, client: str, reason: str, message: str, error: str | None = "invalid_token"
    ) -> None:
        await self.events.record("authentication_failed", "medium", client, reason=reason, anonymous=True)
        # The scopes a new token needs, so an OAuth client asks for them (MCP scope selection).
        scopes = " ".join(sorted(self.challenge_scopes)) or None
        # No error code, no description: a request without a credential learns nothing (RFC 6750 3.1).
        challenge = self._challenge(error, reason if error else None, scopes)
        await send_json(send, 401, refusal("unauthorized", message), {"WWW-Authenticate": challenge})


def bearer_challenge(
    error: str | None, description: str | None, scope: str | None, resource_metadata_url: str | None
) -> str:
    """A WWW-Authenticate value (RFC 6750 section 3, with RFC 9728's resource_metadata)."""
    parts = ['Bearer realm="mcp"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    if resource_metadata_url:
        parts.append(f'resource_metadata="{resource_metadata_url}"')
    return ", ".join(parts)


def _admin_only(principal: Principal) -> bool:
    return principal.scopes == {ADMIN_SCOPE}
