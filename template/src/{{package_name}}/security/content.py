"""Moved to security/guard/content.py; this re-export is kept for one release."""

from .guard.content import (
    DEFAULT_MAX_BINARY_BYTES,
    DEFAULT_MEDIA_TYPES,
    ContentCheck,
    ContentRefusedError,
    Part,
    PromptOutput,
    ResourceOutput,
    ToolOutput,
    media_types,
)

ContentGuard = ContentCheck  # the old name

__all__ = [
    "DEFAULT_MAX_BINARY_BYTES",
    "DEFAULT_MEDIA_TYPES",
    "ContentCheck",
    "ContentGuard",
    "ContentRefusedError",
    "Part",
    "PromptOutput",
    "ResourceOutput",
    "ToolOutput",
    "media_types",
]
