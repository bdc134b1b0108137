"""`@guard.tool(...)`: register an async function as a tool, with its policy and the SDK's Tool."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.types import ToolAnnotations

from ..audit.redact import ALL_ARGUMENTS
from .arguments import arguments_model, check_bounded, notify_parameter, show_sdk
from .call import CallInfo
from .catalogue import Policy, TaskSupport, check_open
from .consent import CONFIRMATION, check_confirmed, input_keys, with_confirmation
from .content import ToolOutput
from .content import media_types as allowed_types
from .notify import Notify
from .results import Prepare
from .rules import with_keywords

if TYPE_CHECKING:
    from .core import Guard

P = ParamSpec("P")
# What a guarded tool may return: text, or content blocks checked by content.py.
R = TypeVar("R", bound=ToolOutput)
ToolFn = Callable[P, Awaitable[R]]


def tool(
    guard: Guard,
    *,
    scopes: tuple[str, ...] = (),
    open_to_all: bool = False,
    read_only: bool | None = None,
    destructive: bool = False,
    idempotent: bool = False,
    open_world: bool = False,
    untrusted_output: str | None = None,
    callers_own_data: bool = False,
    sensitive: Sequence[str] | bool = (),
    rate_limit: str | None = None,
    per_caller: bool = True,
    timeout: float | None = None,
    name: str | None = None,
    title: str | None = None,
    confirm_message: str | None = None,
    media_types: Sequence[str] | None = None,
    schema_keywords: Mapping[str, Any] | None = None,
    task: TaskSupport = "never",
) -> Callable[[ToolFn[P, R]], ToolFn[P, R]]:
    """Register an async tool that returns text, or MCP content blocks (images, audio, resources).

    A caller needs every one of `scopes`, or `open_to_all=True`; neither: full access only (Policy.admits).
    `untrusted_output` names where results come from; they are then fenced as data.
    Results lose secrets and credential-shaped text (security/audit/redact.py), but for the caller's own
    data (`callers_own_data=True`: their files, their notes), where such text is content.
    `read_only` is required; `destructive=True` (read_only=False): the user is asked first (confirm_message).
    `sensitive` names arguments (True: all) the audit trail keeps only as keyed digests.
    A parameter annotated `Annotated[T, Resolve(fn)]` is filled by the SDK (sampling, roots, a question),
    only from a client that declared the capability; it is not an argument.
    `media_types`: the MIME types its content blocks may have (security/guard/content.py checks them).
    `schema_keywords`: JSON Schema rules between arguments, published and enforced (rules.py).
    `@input_key("name")` on the resolver names its question on the wire. `task="optional"` gives clients
    that declare the tasks extension a handle to poll (tasks.py).
    """
    declared = _Declared(
        scopes=frozenset(scopes),
        open_to_all=open_to_all,
        read_only=read_only,
        destructive=destructive,
        idempotent=idempotent,
        open_world=open_world,
        untrusted_output=untrusted_output,
        callers_own_data=callers_own_data,
        sensitive=frozenset([ALL_ARGUMENTS] if sensitive is True else sensitive or ()),
        rate_limit=rate_limit,
        per_caller=per_caller,
        timeout=timeout,
        title=title,
        confirm_message=confirm_message,
        media_types=allowed_types(media_types),
        schema_keywords=schema_keywords,
        task=task,
    )

    return _registering(guard, name, declared)


def _registering(
    guard: Guard, name: str | None, declared: _Declared
) -> Callable[[ToolFn[P, R]], ToolFn[P, R]]:
    def register(fn: ToolFn[P, R]) -> ToolFn[P, R]:
        _register(guard, fn, name or fn.__name__, declared)
        return fn

    return register


def _check_hints(tool_name: str, read_only: bool | None, destructive: bool) -> None:
    """Refuse annotations a client would show wrongly, naming the tool (start-up stops here)."""
    if read_only is None:
        say = "read_only=False (it changes things)" if destructive else "read_only=True or read_only=False"
        raise TypeError(f"tool {tool_name!r}: add {say} to @guard.tool(...); clients show it to the user")
    if read_only and destructive:
        raise TypeError(
            f"tool {tool_name!r}: read_only=True and destructive=True contradict each other; "
            "a tool that destroys something is read_only=False"
        )


@dataclass(frozen=True, slots=True)
class _Declared:
    """What `@guard.tool(...)` was given, besides the name."""

    scopes: frozenset[str]
    open_to_all: bool
    read_only: bool | None
    destructive: bool
    idempotent: bool
    open_world: bool
    untrusted_output: str | None
    callers_own_data: bool
    sensitive: frozenset[str]
    rate_limit: str | None
    per_caller: bool
    timeout: float | None
    title: str | None
    confirm_message: str | None
    media_types: frozenset[str]
    schema_keywords: Mapping[str, Any] | None
    task: TaskSupport


def _register(guard: Guard, fn: Callable[..., Awaitable[Any]], tool_name: str, declared: _Declared) -> None:
    """Check fn, build its policy and the SDK's Tool, and add both to the catalogue."""
    _check_hints(tool_name, declared.read_only, declared.destructive)
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"tool {tool_name!r} must be async so its timeout can cancel it")
    check_open(f"tool {tool_name}", declared.scopes, declared.open_to_all)
    arguments = arguments_model(tool_name, fn, resolvers=True)
    schema = arguments.model_json_schema()
    check_bounded(tool_name, schema)
    unknown = declared.sensitive - {ALL_ARGUMENTS, *schema.get("properties", {})}
    if unknown:
        raise TypeError(f"tool {tool_name!r}: sensitive= names {sorted(unknown)}, not arguments of it")
    arguments_check = None
    if declared.schema_keywords is not None:
        schema, arguments_check = with_keywords(tool_name, schema, declared.schema_keywords)
    policy = Policy(
        kind="tool",
        name=tool_name,
        key=tool_name,
        fn=fn,
        arguments=arguments,
        scopes=declared.scopes,
        open_to_all=declared.open_to_all,
        read_only=bool(declared.read_only),  # _check_hints refused None
        rate_limit=guard.limiter.parse(declared.rate_limit) if declared.rate_limit else None,
        per_caller=declared.per_caller,
        timeout=declared.timeout,
        untrusted_output=declared.untrusted_output,
        callers_own_data=declared.callers_own_data,
        sensitive=declared.sensitive,
        media_types=declared.media_types,
        arguments_check=arguments_check,
        task=declared.task,
    )
    served = Tool.from_function(
        _guarded(guard, fn, policy, declared),
        name=tool_name,
        title=declared.title,
        description=inspect.getdoc(fn),
        annotations=ToolAnnotations(
            title=declared.title,
            read_only_hint=declared.read_only,
            destructive_hint=declared.destructive,
            idempotent_hint=declared.idempotent,
            open_world_hint=declared.open_world,
        ),
        structured_output=False,
    )
    # The question keys exist once the SDK has planned the tool's resolvers.
    policy = replace(policy, input_keys=input_keys(tool_name, served.resolver_plans))
    # Publish our schema: bounded fields and additionalProperties: false.
    guard.catalogue.add(policy, served.model_copy(update={"parameters": schema}))


def _guarded(
    guard: Guard, fn: Callable[..., Awaitable[Any]], policy: Policy, declared: _Declared
) -> Callable[..., Awaitable[Any]]:
    """The function the SDK calls, with the signature the SDK should see."""
    notify = notify_parameter(fn)
    prepare = _preparing(policy.name, declared.destructive, notify, guard.results.redact_text(policy))
    guarded = guard.results.wrap(fn, policy, prepare)
    if declared.destructive:
        with_confirmation(guarded, fn, policy.name, declared.confirm_message)
    elif notify is not None:
        show_sdk(guarded, fn)
    return guarded


def _preparing(
    tool: str, destructive: bool, notify: str | None, redact: Callable[[str], str]
) -> Prepare | None:
    """What runs before the tool: the user's confirmation checked, its Notify built from the SDK's Context."""
    if not destructive and notify is None:
        return None

    def prepare(call: CallInfo, kwargs: dict[str, Any]) -> None:
        if destructive:
            check_confirmed(tool, kwargs.pop(CONFIRMATION, None))
        if notify is not None:  # the SDK filled it with its Context
            kwargs[notify] = Notify(typing.cast(Context, kwargs[notify]), redact, call)

    return prepare
