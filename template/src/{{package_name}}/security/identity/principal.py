"""Who is calling: set by the HTTP authentication layer, or the local user on stdio."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ALL_TOOL_SCOPES = "*"
ADMIN_SCOPE = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `id` is safe to log: it is never the credential itself.

    OAuth callers are namespaced: `user:<sub>` for a user signed in through a client, `client:<id>`
    for a client acting for itself (client credentials); `client_id` names the OAuth client either way.
    `kind` is `key`, `user`, `client` or `stdio`; `groups` come from the OAuth groups claim
    (MCP_OAUTH_GROUPS_CLAIM) or from the key's entry in MCP_API_KEYS. Cedar policies read both.
    """

    id: str
    scopes: frozenset[str]
    client_id: str | None = None
    kind: str = "key"
    groups: frozenset[str] = frozenset()

    def has_scopes(self, required: frozenset[str]) -> bool:
        return ALL_TOOL_SCOPES in self.scopes or required <= self.scopes

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    @property
    def uid(self) -> str:
        """The id policies name (`Mcp::Principal::"key:alice"`): `<kind>:<name>`."""
        return self.id if self.id.startswith(f"{self.kind}:") else f"{self.kind}:{self.id}"

    @property
    def name(self) -> str:
        return self.uid.split(":", 1)[1]


# stdio: the process was started by the local user, who already has their own access.
LOCAL_USER = Principal(id="local-stdio", scopes=frozenset({ALL_TOOL_SCOPES}), kind="stdio")


# The one place the principal is read: the HTTP perimeter stores it in the ASGI scope's state
# (`scope["state"]["principal"]`, which Starlette shows as `request.state.principal`).
def principal_in(scope: Mapping[str, Any]) -> Principal | None:
    """The principal authenticated for this ASGI scope, if any."""
    principal = (scope.get("state") or {}).get("principal")
    return principal if isinstance(principal, Principal) else None


def principal_of(request: Any) -> Principal | None:
    """The principal authenticated for this HTTP request (an SDK context's `ctx.request`), if any.

    `None` for no request: only the caller knows whether that means stdio (the local user) or a bug.
    """
    principal = getattr(getattr(request, "state", None), "principal", None)
    return principal if isinstance(principal, Principal) else None
