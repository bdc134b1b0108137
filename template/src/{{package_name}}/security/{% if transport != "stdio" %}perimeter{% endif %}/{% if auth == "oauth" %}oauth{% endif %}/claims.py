"""What a verified token's claims mean on this server: its audience, its principal, its scopes.

Shared by the JWT checks and introspection (RFC 7662 answers carry the same claims).
"""

from __future__ import annotations

from typing import Any

from ...identity.principal import ADMIN_SCOPE, ALL_TOOL_SCOPES
from ..common import CredentialRejectedError, NamedAccessToken

LEEWAY_SECONDS = 30
# Names with a meaning of their own on this server; an authorization server cannot grant them.
RESERVED_SCOPES = frozenset({ALL_TOOL_SCOPES, ADMIN_SCOPE})


def check_audience(aud: object, audience: str, allow_missing: bool) -> None:
    """`aud` (a string or a list, RFC 7519) must name this resource; absent only when allowed."""
    if aud is None or aud == [] or aud == "":
        if not allow_missing:
            raise CredentialRejectedError("missing_audience")
        return
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in [str(item) for item in audiences]:
        raise CredentialRejectedError("wrong_audience")


def named_token(claims: dict[str, Any], audience: str, groups_claim: str = "groups") -> NamedAccessToken:
    """The token's caller, namespaced so a user and a client can never be the same principal.

    A token is a client's own (client credentials) when it has no `sub`, when `sub` is the client id
    (RFC 9068 section 2.2), or when the issuer says so (`gty: client-credentials` from Auth0,
    `idtyp: app` from Entra ID): the principal is `client:<client_id>`. Otherwise a user signed in
    through a client: `user:<sub>`, with the client id kept next to it for the audit trail. The
    principal's groups are the claim `groups_claim` names (a list, or a space-separated string).
    """
    client = str(
        claims.get("client_id") or claims.get("azp") or claims.get("cid") or claims.get("appid") or ""
    )
    subject = str(claims.get("sub") or "")
    own = (
        not subject
        or subject == client
        or claims.get("gty") == "client-credentials"
        or claims.get("idtyp") == "app"
    )
    principal = f"client:{client or subject}" if own else f"user:{subject}"
    exp = claims.get("exp")
    return NamedAccessToken(
        token="",  # nosec B106 - the token is not kept
        client_id=client or "unknown",
        scopes=sorted(scopes_of(claims) - RESERVED_SCOPES),
        expires_at=int(exp) if isinstance(exp, int | float) else None,
        resource=audience,
        subject=None if own else subject,
        principal_id=principal,
        groups=sorted(_strings(claims.get(groups_claim))),
    )


def _strings(raw: object) -> set[str]:
    if isinstance(raw, list):
        return {str(item) for item in raw if isinstance(item, str | int)}
    return set(raw.split()) if isinstance(raw, str) else set()


def scopes_of(claims: dict[str, Any]) -> set[str]:
    """`scope`, a space-separated string (RFC 9068, RFC 7662), or else `scp`, a list (Entra ID,
    Okta) or a string."""
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, list):
        return {str(item) for item in raw}
    return set(str(raw).split())
