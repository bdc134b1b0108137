"""Assembly: the MCP server with its guard, the services it opens, the SDK adapter, observability."""

from typing import Any

# server.py's names, where imports written before template 0.2.0 look for them (until the next release).
# Looked up lazily: the guard imports server.sdk, and server/build.py imports the guard.
_MOVED_TO_BUILD = frozenset({"GuardedServer", "build_guard", "build_server", "freeze_startup_objects"})


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_BUILD:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
