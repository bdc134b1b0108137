"""Render a project and add tool modules to it the way its README tells users to.

"Writing tools, resources and prompts safely": put a module in src/<package>/tools/, and it is served
(`tooling.add_tool_module` does exactly that). Tests that need test-only tools
(a slow tool, a tool with huge output) get a project of their own with `project_with_tools`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import BASE, Venv, render
from .tooling import add_tool_module

# Tools that misbehave on purpose. `data_dir` markers let a test see what ran and what was cancelled.
MISBEHAVING_TOOLS = textwrap.dedent(
    '''
    """Test-only tools that misbehave on purpose: slow, cancellable, huge output, rate limited."""

    from __future__ import annotations

    from typing import Annotated

    import anyio
    from pydantic import Field

    from ..security.guard import Guard
    from ..settings import Settings

    Tag = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,40}$", max_length=40)]


    def register(guard: Guard, settings: Settings) -> None:
        markers = settings.data_dir / "markers"

        def mark(tag: str, what: str) -> None:
            markers.mkdir(parents=True, exist_ok=True)
            (markers / f"{tag}.{what}").write_text(what)

        async def sleep_marked(seconds: float, tag: str) -> str:
            mark(tag, "started")
            try:
                await anyio.sleep(seconds)
            except anyio.get_cancelled_exc_class():
                mark(tag, "cancelled")
                raise
            mark(tag, "finished")
            return f"slept {seconds:g} seconds"

        @guard.tool(read_only=True)
        async def slow(seconds: Annotated[float, Field(ge=0, le=120)], tag: Tag) -> str:
            """Sleep, under the default timeout (MCP_TOOL_TIMEOUT_SECONDS)."""
            return await sleep_marked(seconds, tag)

        @guard.tool(read_only=True, timeout=1)
        async def slow_capped(seconds: Annotated[float, Field(ge=0, le=120)], tag: Tag) -> str:
            """Sleep, under its own one-second timeout."""
            return await sleep_marked(seconds, tag)

        @guard.tool(read_only=True)
        async def big(chars: Annotated[int, Field(ge=1, le=50_000_000)]) -> str:
            """Return `chars` characters."""
            return "x" * chars

        @guard.tool(read_only=True, rate_limit="3/minute", per_caller=False)
        async def shared_quota() -> str:
            """Three calls a minute, shared by every caller."""
            return "ok"

        @guard.tool(read_only=True, rate_limit="3/minute", per_caller=True)
        async def own_quota() -> str:
            """Three calls a minute for each caller."""
            return "ok"
    '''
).lstrip()


_cache: dict[tuple[str, str], Path] = {}


def project_with_tools(
    venv: Venv,
    dest: Path,
    *,
    name: str = "misbehaving",
    source: str = MISBEHAVING_TOOLS,
    answers: Mapping[str, Any] | None = None,
) -> Path:
    """Render a project of its own (own package name, so it shares the venv), add a module, install it.

    Cached per test session by (project name, module name): the first caller's `dest` is used.
    """
    answers = dict(answers or {"project_name": "Acme Abuse", "transport": "both", "sample_tools": []})
    answers = {**BASE, **answers}
    key = (answers["project_name"], name)
    if key not in _cache:
        project = render(answers, dest)
        add_tool_module(project, name, source)
        venv.install(project)
        _cache[key] = project
    return _cache[key]
