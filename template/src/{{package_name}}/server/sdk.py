"""Every place this project reaches past the public API of mcp and limits (and, in HTTP projects, of the
HTTP server: server/sdk_http.py), and the start-up check that each one is still there.

mcp is pinned to 2.3.x, limits below its next major version (pyproject.toml). Each name
below is used because the pinned release has no public equivalent; the upstream change that would remove
it is named beside it. `check()` runs when the server is built (server/build.py): a release that moves
any of them stops start-up with an SDKChangedError naming this file, never a request-time AttributeError
and never a silently disabled feature. Four subclasses extend private methods and stay beside the code
they serve (transport/http/session_manager.py, security/limits.py, security/perimeter/connections.py);
each names the lists below it relies on (`relies_on`), so this one file lists every dependency, and the
template's tests/test_sdk_adapter.py fails if a private name is used anywhere else.

Relied on as behaviour, not by name (no check can see it; the tests of each feature cover it):
- the guard sets `__signature__` and `__annotations__` on the functions it registers
  (security/guard/arguments.py, consent.py),
  so that the SDK's introspection passes `Context`, fills `Resolve(...)` parameters and asks for consent
  as it would for the author's own function;
- the SDK's manager reads its `event_store` synchronously in `_admit_session`: SessionManager sets it
  around that call, giving each session a replay buffer of its own;
- SessionManager swaps the class of the transport the SDK builds for AnswerFirstTransport, which adds
  behaviour and no state;
- the SDK builds a resource template from the guard's function again (MCPServer.resource) exactly as the
  guard built it; pydantic's `validate_call` keeps that function as `raw_function` (server/build.py).
"""

from __future__ import annotations

import functools
import importlib
import operator
from collections.abc import Awaitable, Callable, Container, Iterator
from typing import Annotated, Any

from limits.aio.storage import MemoryStorage
from mcp.server import MCPServer, Server
from mcp.server._streamable_http_modern import handle_modern_request
from mcp.server.connection import Connection
from mcp.server.mcpserver import Resolve
from mcp.server.mcpserver.resolve import build_resolver_plans, find_resolved_parameters
from mcp.server.request_state import RequestStateBoundary
from mcp.server.session import ServerSession
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import DEFAULT_NEGOTIATED_VERSION

from .. import answers

__all__ = [
    "SDKChangedError",
    "add_request_handler",
    "builtin_middleware",
    "check",
    "connection",
    "handle_modern_request",
    "lifespan_state",
    "live_session_ids",
]

HERE = "server/sdk.py"


class SDKChangedError(RuntimeError):
    """The installed mcp, limits or HTTP server lacks something this project relies on (server/sdk.py)."""


# ---- mcp: functions -------------------------------------------------------------------------------------

SERVER_STATE = ("_lowlevel_server",)  # MCPServer's low-level Server (add_request_handler below)
SESSION_STATE = ("_connection",)  # ServerSession's Connection (connection below)


def connection(session: Any) -> Any:
    """The per-connection state of an SDK session (`ServerSession._connection`; its `.state` is public).

    Upstream ask: `ServerRequestContext.connection`. Raises instead of defaulting to None: a rename must
    not switch log levels or subscriptions off.
    """
    try:
        return session._connection
    except AttributeError as exc:
        raise SDKChangedError(f"mcp's ServerSession has no _connection any more: see {HERE}") from exc


def add_request_handler(
    server: MCPServer, method: str, params_type: type[Any], handler: Callable[..., Awaitable[Any]]
) -> None:
    """Serve an MCP method MCPServer has no decorator for (logging/setLevel, resources/subscribe).

    Upstream ask: handler registration on MCPServer (python-sdk#2135). `Extension.methods()` could add
    them, but would advertise an extension the server does not have.
    """
    server._lowlevel_server.add_request_handler(method, params_type, handler)


# The state the manager's lifespan produced, which every request of the stateless fast paths shares
# (transport/http/stateless.py, streaming.py). Read per request, so a C-level getter: as cheap as the
# attribute itself. Upstream ask: `StreamableHTTPSessionManager.lifespan_state`.
lifespan_state: Callable[[StreamableHTTPSessionManager], Any] = operator.attrgetter("_lifespan_state")

# The ids of the sessions the manager holds open (it forgets one on DELETE, idle timeout or crash):
# transport/http/sessions.py. Upstream ask: a read-only `StreamableHTTPSessionManager.session_ids`.
live_session_ids: Callable[[StreamableHTTPSessionManager], Container[str]] = operator.attrgetter(
    "_server_instances"
)


async def end_session(manager: StreamableHTTPSessionManager, session_id: str) -> None:
    """End a session as the manager does on DELETE: forgotten at once (its id answers 404), then its
    transport terminated. For a principal at its session cap (transport/http/sessions.py). Upstream ask:
    a public `StreamableHTTPSessionManager.terminate_session(session_id)`."""
    transport = manager._server_instances.get(session_id)
    if transport is not None:
        await manager._discard_session(session_id, transport)


# `handle_modern_request` (imported above from the private `mcp.server._streamable_http_modern`): the
# SDK's entry for one 2026-07-28 request whose answer may stream notifications (transport/http/streaming.py).
# Upstream ask: export it, or let the stateless manager choose SSE per request.

# The layers MCPServer puts in its middleware chain before any of ours, outermost first. The OpenTelemetry
# one is matched by name: its class lives in the private `mcp.server._otel`. Upstream ask: export it.
BUILTIN_MIDDLEWARE = ("OpenTelemetryMiddleware", RequestStateBoundary.__name__)


def builtin_middleware(server: MCPServer) -> list[Any]:
    """The SDK's own layers of `server.middleware` (a fresh server's whole chain), checked by class name."""
    found = list(server.middleware)
    if tuple(type(layer).__name__ for layer in found) != BUILTIN_MIDDLEWARE:
        raise SDKChangedError(
            f"mcp's MCPServer starts its middleware chain with {[type(x).__name__ for x in found]}, "
            f"not {list(BUILTIN_MIDDLEWARE)}: see {HERE} and the chain in server/build.py"
        )
    return found


# ---- names the subclasses and the guard use ---------------------------------------------------------

# transport/http/session_manager.py. Upstream ask: an option to answer a session's request as JSON when
# nothing precedes its response (the template's docs/benchmarks.md measures the SSE stream at about half
# the CPU of a request); it would delete AnswerFirstTransport and these names.
SESSION_MANAGER_METHODS = ("_admit_session",)  # overridden: a replay buffer per session, the transport class
SESSION_MANAGER_CALLED = ("_discard_session",)  # end_session, above
SESSION_MANAGER_STATE = ("event_store", "_lifespan_state", "_server_instances")
TRANSPORT_METHODS = (
    "_handle_post_request",  # overridden
    "_validate_request_headers",
    "_mint_priming_event",
    "_create_session_message",
    "_clean_up_memory_streams",
    "_create_error_response",
    "_create_json_response",
    "_check_content_type",
    "_create_event_data",
)
TRANSPORT_STATE = ("_read_stream_writer", "_request_streams", "_sse_stream_writers", "_terminated")

# security/guard/consent.py reads `plan.fn` and `plan.wire_key` of the plans that the public
# `build_resolver_plans` returns (instances of the private `_ResolverPlan`), to rename a question's wire
# key to the author's `input_key`. Upstream ask: make the plan type public.
RESOLVER_PLAN_FIELDS = ("fn", "wire_key")

# security/limits.py: `_MemoryStorage` overrides limits' name-mangled sweep and reads the storage's
# tables. Upstream ask: a sweep interval option on limits' MemoryStorage.
MEMORY_STORAGE_METHODS = ("_MemoryStorage__schedule_expiry", "_MemoryStorage__expire_events")
MEMORY_STORAGE_STATE = ("storage", "expirations", "events", "locks")


# ---- the start-up check ---------------------------------------------------------------------------------


def check(server: MCPServer | None = None) -> None:
    """Stop start-up, naming this file, if any name above is gone. The library part runs once a process."""
    missing = list(_missing_in_libraries())
    if server is not None:
        missing += _absent(server, "mcp MCPServer", SERVER_STATE)
    if missing:
        raise SDKChangedError(
            f"the installed mcp, limits or HTTP server lacks {', '.join(missing)}: this project relies on "
            f"them (see {HERE}); install the versions pyproject.toml pins, or update {HERE}"
        )


@functools.cache
def _missing_in_libraries() -> tuple[str, ...]:
    return tuple(_missing())


def _absent(owner: object, label: str, names: tuple[str, ...]) -> Iterator[str]:
    return (f"{label}.{name}" for name in names if not hasattr(owner, name))


def _missing() -> Iterator[str]:
    # Methods on the class; the state a constructor sets on a throwaway instance (each is cheap and
    # starts nothing).
    session = ServerSession(None, Connection.from_envelope(DEFAULT_NEGOTIATED_VERSION, None, None))  # type: ignore[arg-type]
    yield from _absent(session, "mcp ServerSession", SESSION_STATE)
    yield from _absent(Server, "mcp Server", ("add_request_handler",))
    yield from _absent(
        StreamableHTTPSessionManager,
        "mcp StreamableHTTPSessionManager",
        SESSION_MANAGER_METHODS + SESSION_MANAGER_CALLED,
    )
    manager = StreamableHTTPSessionManager(app=Server("sdk-check"))
    yield from _absent(manager, "mcp StreamableHTTPSessionManager", SESSION_MANAGER_STATE)
    yield from _absent(StreamableHTTPServerTransport, "mcp StreamableHTTPServerTransport", TRANSPORT_METHODS)
    transport = StreamableHTTPServerTransport(mcp_session_id=None)
    yield from _absent(transport, "mcp StreamableHTTPServerTransport", TRANSPORT_STATE)
    plans = build_resolver_plans(find_resolved_parameters(_asks), set())
    for plan in plans.values() or [None]:
        yield from _absent(plan, "mcp _ResolverPlan", RESOLVER_PLAN_FIELDS)
    yield from _absent(MemoryStorage, "limits MemoryStorage", MEMORY_STORAGE_METHODS)
    yield from _absent(MemoryStorage(), "limits MemoryStorage", MEMORY_STORAGE_STATE)
    if "http" in answers.TRANSPORTS:  # the HTTP server's names: a module of HTTP projects only
        yield from importlib.import_module(f"{__package__}.sdk_http").missing()


def _question() -> str:
    return ""


def _asks(answer: Annotated[str, Resolve(_question)]) -> None:
    """A throwaway tool with one resolved parameter: the SDK plans one resolver for it."""
