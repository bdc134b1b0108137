"""One request on its way through the guard: who sent it, what it names, and what every check shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem
from mcp.server.context import ServerRequestContext

from ..audit.events import SecurityEvents, Severity
from ..audit.redact import Redactor
from ..identity.principal import LOCAL_USER, Principal, principal_of
from ..limits import PRINCIPAL_COUNTED, RateLimiter
from .catalogue import Catalogue, Policy

if TYPE_CHECKING:
    from ..policy.engine import Policies
    from .execution import InFlight
    from .listing import Listing
    from .results import Results
    from .tasks import Tasks


@dataclass(frozen=True, slots=True)
class Shared:
    """What the checks, the execution and the guard's own handlers read; built once, by `Guard`."""

    catalogue: Catalogue
    events: SecurityEvents
    redactor: Redactor
    limiter: RateLimiter
    principal_limit: RateLimitItem  # every request of a principal counts against it
    results: Results
    in_flight: InFlight
    max_in_flight: int
    default_timeout: float
    stdio: bool  # a request without an HTTP request is the local user's (stdio), else nobody's
    listing: Listing  # the lists each caller is shown
    tasks: Tasks | None = None  # the tasks extension (tasks.py)
    policies: Policies | None = None  # the Cedar policies (policies/*.cedar); None: no policy file


class Refused(Exception):
    """A check's verdict, never seen outside the pipeline: `refuse()` records `event` and answers
    with `message` in the method's shape.

    `code` is the JSON-RPC error code where the answer is an error (tools/call answers with an error
    result instead, unless `protocol=True`: what the client itself lacks, such as -32021).
    `named=False` records the refusal without the item (a limit of the principal's).
    """

    def __init__(
        self,
        event: str,
        severity: Severity,
        code: int,
        message: str,
        *,
        data: dict[str, Any] | None = None,
        named: bool = True,
        protocol: bool = False,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.event = event
        self.severity: Severity = severity
        self.code = code
        self.message = message
        self.data = data
        self.named = named
        self.protocol = protocol
        self.details = details


@dataclass(slots=True)
class Call:
    """One request: the context, the caller, and what the checks found (the item, its arguments)."""

    shared: Shared
    ctx: ServerRequestContext[Any, Any]
    principal: Principal | None
    client: str  # the HTTP client's address, "stdio", or "unknown"
    request_id: str | None
    policy: Policy | None = None
    arguments: Any = None
    refused: str | None = None  # why a URI template value is not allowed

    @property
    def identifier(self) -> str:
        """What the call's events name: the principal's id, else the client's address."""
        return self.principal.id if self.principal is not None else self.client

    @property
    def counted(self) -> bool:
        """The HTTP perimeter already counted this request against the principal's rate limit."""
        return bool(getattr(getattr(self.ctx.request, "state", None), PRINCIPAL_COUNTED, False))


def caller(request: Any, *, stdio: bool) -> Principal | None:
    """The principal of a request: the one the HTTP perimeter authenticated; without an HTTP request,
    the local user when the server runs on stdio (it was started by them), else nobody."""
    if request is None:
        return LOCAL_USER if stdio else None
    return principal_of(request)


def client_address(request: Any, *, stdio: bool) -> str:
    """Where a request came from, for the audit trail: the HTTP client's address, "stdio" or "unknown"."""
    if request is None:
        return "stdio" if stdio else "unknown"
    return getattr(getattr(request, "client", None), "host", None) or "unknown"


def identify(shared: Shared, ctx: ServerRequestContext[Any, Any]) -> Call:
    """The request `ctx` as a Call: its principal (if any) and the client's address."""
    request, stdio = ctx.request, shared.stdio
    request_id = None if ctx.request_id is None else str(ctx.request_id)
    return Call(shared, ctx, caller(request, stdio=stdio), client_address(request, stdio=stdio), request_id)


def client_of(principal: Principal) -> dict[str, Any]:
    """The OAuth client a user called through, for the audit trail (never a credential)."""
    return {"client_id": principal.client_id} if principal.client_id else {}
