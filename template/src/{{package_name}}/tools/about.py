"""whoami: the smallest guarded tool, and the model for writing your own."""

from __future__ import annotations

from ..security.guard import Guard, current_call
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True, idempotent=True, title="Who am I")
    async def whoami() -> str:
        """Tell the caller which identity and scopes this server sees for them."""
        call = current_call()
        scopes = " ".join(sorted(call.principal.scopes)) or "(none)"
        client = f"\nclient: {call.principal.client_id}" if call.principal.client_id else ""
        return f"principal: {call.principal.id}\nscopes: {scopes}{client}"
