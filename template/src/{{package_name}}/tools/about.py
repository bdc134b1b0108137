"""whoami, about://server and use_tools_safely: the smallest guarded tool, resource and prompt.

They are the model for writing your own: a module that registers them through the guard.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .. import answers
from ..security.guard import Guard, current_call
from ..security.guard.text import INSTRUCTIONS
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    # open_to_all: every authenticated caller may ask who it is, whatever its scopes. A tool without
    # scopes and without open_to_all is for full-access credentials only (keys without scopes, stdio).
    @guard.tool(open_to_all=True, read_only=True, idempotent=True, title="Who am I")
    async def whoami() -> str:
        """Tell the caller which identity and scopes this server sees for them."""
        call = current_call()
        scopes = " ".join(sorted(call.principal.scopes)) or "(none)"
        client = f"\nclient: {call.principal.client_id}" if call.principal.client_id else ""
        return f"principal: {call.principal.id}\nscopes: {scopes}{client}"

    @guard.resource("about://server", open_to_all=True, name="about", title="About this server")
    async def about() -> str:
        """What this server is and how it treats tool output."""
        return f"{answers.PROJECT_NAME}\n{INSTRUCTIONS}"

    async def tool_names(typed: str) -> list[str]:
        # Only the tools this caller may use: a completion names no tool hidden from its tools/list.
        mine = guard.tool_names(current_call().principal)
        return [name for name in mine if name.startswith(typed)]

    @guard.prompt(open_to_all=True, title="Use tools safely", complete={"tool": tool_names})
    async def use_tools_safely(tool: Annotated[str, Field(max_length=64)] = "") -> str:
        """A reminder for the model on how to treat tool output from this server (optionally one tool's)."""
        if tool in guard.tool_names(current_call().principal):
            return f"You are about to call {tool}. {INSTRUCTIONS}"
        return INSTRUCTIONS
