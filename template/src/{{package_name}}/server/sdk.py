"""Every place this project reaches past mcp's public API, and the start-up check that they still exist.

mcp is pinned to 2.3.x (pyproject.toml). Each function below exists because mcp 2.3.0 has no public
equivalent. `check()` runs when the server is built: an SDK release that moves any of them stops
start-up naming this file, never a request-time AttributeError and never a silently disabled feature.
"""

from __future__ import annotations

from typing import Any


class SDKChangedError(RuntimeError):
    """The installed mcp no longer has something this project relies on (see server/sdk.py)."""


def connection(session: Any) -> Any:
    """The per-connection state of an SDK session (`ServerSession._connection`; no public accessor).

    Raises instead of defaulting to None: a rename must not switch log levels or subscriptions off.
    """
    try:
        return session._connection
    except AttributeError as exc:
        raise SDKChangedError("mcp's ServerSession has no _connection any more: see server/sdk.py") from exc
