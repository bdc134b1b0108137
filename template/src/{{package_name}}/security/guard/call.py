"""What a running tool may know about its call, and the errors authors raise."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from ..identity.principal import Principal
from ..refusal import RefusedError


class ToolRefusedError(RefusedError):
    """Raised by a tool to refuse a request. The message reaches the model: keep it short and safe."""

    def __init__(self, message: str, *, event: str = "input_validation_failed", **details: Any) -> None:
        super().__init__(message, event=event, **details)


class UnboundedArgumentError(TypeError):
    """A tool argument has no bound; every string, list and number must have one."""


@dataclass(slots=True)
class CallInfo:
    """What a running tool may know about its call; read it with `current_call()`."""

    principal: Principal
    client: str
    tool: str
    request_id: str | None
    outcome: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)
    notifications: int = 0  # sent to the client through Notify
    notifications_dropped: int = 0  # over MAX_NOTIFICATIONS_PER_CALL


_current: contextvars.ContextVar[CallInfo] = contextvars.ContextVar("current_call")


def current_call() -> CallInfo:
    """The call the running tool, resource or prompt serves (only while it runs)."""
    return _current.get()


def running(call: CallInfo) -> contextvars.Token[CallInfo]:
    """Make `call` what `current_call()` returns; hand the token back to `finished`."""
    return _current.set(call)


def finished(token: contextvars.Token[CallInfo]) -> None:
    _current.reset(token)
