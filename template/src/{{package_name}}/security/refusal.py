"""The one refusal every layer raises on purpose, so the guard answers all of them the same way.

A tool raises `ToolRefusedError`; the libraries tools import raise their own subclasses
(`PathRefusedError`, `UrlRefusedError`, the content check's `ContentRefusedError`). The guard catches
`RefusedError`, writes one security event named `event` with `details`, and answers with `message`.
"""

from __future__ import annotations

from typing import Any


class RefusedError(Exception):
    """Refused on purpose: `message` is short and safe to show the caller (no data, no paths, no secrets)."""

    event = "input_validation_failed"

    def __init__(self, message: str, *, event: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if event is not None:
            self.event = event
        self.details = details

    @property
    def public_message(self) -> str:
        return self.message
