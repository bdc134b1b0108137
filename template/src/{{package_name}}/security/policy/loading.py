"""Turning policies on at start-up, and reloading them on SIGHUP without a restart."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..audit.events import SecurityEvents
from .base import PolicyError, policy_files

if TYPE_CHECKING:
    from .engine import Policies

log = logging.getLogger(__name__)


def load_policies(directory: Path, catalogue: Any, server: str) -> Policies | None:
    """The policies in `directory`, validated against what `catalogue` serves; None without a policy file
    (the check is off and costs nothing). Raises PolicyError naming file:line and the fix."""
    if not policy_files(directory):
        return None
    try:
        from .engine import Policies
        from .model import build_model, served_by
    except ImportError:
        raise PolicyError(
            f"{directory}: policies need cedarpy and cedar-policy-mcp-schema-generator, which have no wheel "
            "for this platform (README: Policies); move the .cedar files away to run without policies"
        ) from None
    return Policies(directory, build_model(served_by(catalogue)), server)


def reload(policies: Policies, events: SecurityEvents) -> None:
    """Read the policies again; a set that fails is refused (the running one stays), with a high event."""
    try:
        count = policies.reload()
    except ValueError as exc:  # PolicyError, or anything Cedar refused past our checks
        log.error("policies not reloaded, the running set stays: %s", exc)
        _record(events, "policy_reload_failed", "high", problem=str(exc)[:2000])
        return
    log.warning("policies reloaded: %d policies", count)
    _record(events, "policy_reloaded", "medium", policies=count)


def reload_on_sighup(policies: Policies, events: SecurityEvents) -> None:
    """SIGHUP reloads the policies (`kill -HUP <pid>`); the main thread only, where signals arrive."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reload(policies, events))


def _record(events: SecurityEvents, event: str, severity: Any, **details: Any) -> None:
    """The event, written by the running event loop (a signal handler cannot await)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(events.record(event, severity, "policies", **details))
        return
    loop.call_soon_threadsafe(_keep, loop.create_task, events.record(event, severity, "policies", **details))


_pending: set[asyncio.Task[Any]] = set()


def _keep(create: Any, coroutine: Any) -> None:
    """Run the event's write, held until done (the loop keeps only a weak reference to a task)."""
    task = create(coroutine)
    _pending.add(task)
    task.add_done_callback(_pending.discard)
