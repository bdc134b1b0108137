"""What the rest of the server needs from policies without importing Cedar (no policy file: never loaded)."""

from __future__ import annotations

from pathlib import Path

NAMESPACE = "Mcp"
READ_RESOURCE = "read_resource"
GET_PROMPT = "get_prompt"
READ_ONLY = "read_only"
DESTRUCTIVE = "destructive"


class PolicyError(ValueError):
    """The policies cannot be used as written; the message names the file, the line and the fix."""


def policy_files(directory: Path) -> list[Path]:
    """The policy files, in name order; none (or no directory) means policies are off."""
    return sorted(directory.glob("*.cedar")) if directory.is_dir() else []
