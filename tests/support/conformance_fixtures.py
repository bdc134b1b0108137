"""The conformance suite's fixture tools, registered through the guard: test code only, never rendered.

tests/test_conformance.py writes SOURCE into a rendered project as tools/conformance_fixtures.py, the way
a user adds a tool module (support.tooling.add_tool_module), so each fixture gets every guard defence and
the suite judges the real consent path (destructive=True: the guard asks, the SDK seals requestState).
Fixtures whose wire shape the guard does not produce on purpose (image/audio content, log and progress
notifications, a resolver named by the suite) are listed with reasons in conformance-expected-failures.yml.
"""

SOURCE = '''"""Fixtures of the MCP conformance suite (test-only)."""

from __future__ import annotations

from ..security.guard import Guard, ToolRefusedError
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True, name="test_simple_text")
    async def simple_text() -> str:
        """Return a fixed text (conformance fixture)."""
        return "This is a simple text response for testing."

    @guard.tool(read_only=True, name="test_error_handling")
    async def error_handling() -> str:
        """Always fail (conformance fixture)."""
        raise ToolRefusedError("This tool intentionally returns an error for testing")

    @guard.tool(read_only=False, destructive=True, name="test_input_required_result_tampered_state")
    async def tampered_state() -> str:
        """Run only after the user confirms (conformance fixture for sealed requestState)."""
        return "confirmed"
'''
