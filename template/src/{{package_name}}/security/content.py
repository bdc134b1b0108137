"""Moved to security/guard/content.py; this re-export is kept for one release."""

from .guard.content import (
    DEFAULT_MAX_BINARY_BYTES,
    DEFAULT_MEDIA_TYPES,
    ContentGuard,
    ContentRefusedError,
    Part,
    PromptOutput,
    ResourceOutput,
    ToolOutput,
    media_types,
)

__all__ = [
    "DEFAULT_MAX_BINARY_BYTES",
    "DEFAULT_MEDIA_TYPES",
    "ContentGuard",
    "ContentRefusedError",
    "Part",
    "PromptOutput",
    "ResourceOutput",
    "ToolOutput",
    "media_types",
]
