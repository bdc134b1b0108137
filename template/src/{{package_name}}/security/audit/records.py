"""What the audit trail stores and how it is asked for it: one event, a query, a page of answers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Severity = Literal["low", "medium", "high", "critical"]
SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}
MAX_PAGE = 500
MAX_SCAN = 10_000  # events a store reads to fill one filtered page before it hands back a cursor
COMPACT = (",", ":")


class EventStoreConfigError(ValueError):
    """MCP_SECURITY_EVENTS_URL names a store that cannot be opened."""


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    id: str
    timestamp: str
    event: str
    severity: Severity
    identifier: str
    tool: str | None = None
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # `details` as compact JSON, when the writer already made it (SecurityEvents does, once per event).
    details_json: str = field(default="", compare=False, repr=False)

    def details_text(self) -> str:
        return self.details_json or json.dumps(self.details, separators=COMPACT, default=str)

    def json(self) -> str:
        """The event as one compact JSON object (to_dict's keys, in order), its details serialised once."""
        head = json.dumps(self._head(), separators=COMPACT)
        return f'{head[:-1]},"details":{self.details_text()}}}'

    def to_dict(self) -> dict[str, Any]:
        # Its values are plain JSON that nothing downstream changes: a shallow copy of `details` is enough
        # (dataclasses.asdict deep-copied it field by field, a sixth of an event's cost).
        return {**self._head(), "details": dict(self.details)}

    def _head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "timestamp": self.timestamp,
            "event": self.event,
            "severity": self.severity,
            "identifier": self.identifier,
            "tool": self.tool,
            "request_id": self.request_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecurityEvent:
        stored = (name for name in cls.__dataclass_fields__ if name != "details_json")
        return cls(**{name: data.get(name) for name in stored})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class EventQuery:
    severity: Severity | None = None
    event: str | None = None
    since: datetime | None = None
    limit: int = 100
    after: str | None = None  # the store's own position, decoded from the cursor
    newest_first: bool = False  # then `after` is where the previous page ended, and older events follow

    def matches(self, event: SecurityEvent) -> bool:
        if self.severity and SEVERITY_RANK[event.severity] < SEVERITY_RANK[self.severity]:
            return False
        if self.event and event.event != self.event:
            return False
        return not (self.since and datetime.fromisoformat(event.timestamp) < self.since)


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[SecurityEvent]
    next_position: str | None
