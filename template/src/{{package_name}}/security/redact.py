"""The one place where secrets are scrubbed before anything reaches an event or a log line."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
MAX_STRING = 200
MAX_ITEMS = 20
MAX_DEPTH = 4

_SECRET_NAMES = re.compile(
    r"(authorization|cookie|token|secret|passw|api[_-]?key|apikey|credential|private|session[_-]?id|signature)",
    re.IGNORECASE,
)
_SECRET_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+[a-z0-9._~+/=-]+"),
    re.compile(r"\bmcp_[A-Za-z0-9_-]{16,}"),  # our own keys
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"\b(?:sk|pk|rk)[-_](?:live|test|proj)?[-_]?[A-Za-z0-9]{16,}"),
    re.compile(r"\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)\b(?:api[_-]?key|access[_-]?token|password|secret)=[^&\s]+"),
]


class Redactor:
    """Scrubs known secret values (from settings) and common key patterns, and bounds the size."""

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self._values = sorted({v for v in secret_values if len(v) >= 8}, key=len, reverse=True)

    def text(self, value: str, limit: int = MAX_STRING) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern in _SECRET_PATTERNS:
            value = pattern.sub(REDACTED, value)
        if len(value) > limit:
            value = value[:limit] + f"...[{len(value) - limit} more chars]"
        return value

    def value(self, value: Any, depth: int = 0) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value)
        if depth >= MAX_DEPTH:
            return "[nested]"
        if isinstance(value, dict):
            items = list(value.items())
            out: dict[str, Any] = {}
            for key, item in items[:MAX_ITEMS]:
                name = self.text(str(key), 60)
                out[name] = REDACTED if _SECRET_NAMES.search(name) else self.value(item, depth + 1)
            if len(items) > MAX_ITEMS:
                out["..."] = f"{len(items) - MAX_ITEMS} more keys"
            return out
        if isinstance(value, list | tuple | set | frozenset):
            seq = list(value)
            cut = [self.value(item, depth + 1) for item in seq[:MAX_ITEMS]]
            if len(seq) > MAX_ITEMS:
                cut.append(f"... {len(seq) - MAX_ITEMS} more items")
            return cut
        return self.text(repr(value))
