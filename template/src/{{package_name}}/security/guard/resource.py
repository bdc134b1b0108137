"""`@guard.resource(uri)`: register an async function as a resource or an RFC 6570 resource template."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from mcp.server.mcpserver.resources import FunctionResource, ResourceTemplate
from mcp.shared.uri_template import UriTemplate
from pydantic import BaseModel

from .arguments import check_completers, item_arguments, show_sdk
from .catalogue import Completer, Kind, Policy, check_open
from .content import ResourceOutput
from .content import media_types as allowed_types

if TYPE_CHECKING:
    from .core import Guard

ResourceFn = TypeVar("ResourceFn", bound=Callable[..., Awaitable[ResourceOutput]])


def resource(
    guard: Guard,
    uri: str,
    *,
    scopes: tuple[str, ...] = (),
    open_to_all: bool = False,
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    mime_type: str = "text/plain",
    untrusted_output: str | None = None,
    rate_limit: str | None = None,
    per_caller: bool = True,
    timeout: float | None = None,
    complete: Mapping[str, Completer] | None = None,
    media_types: Sequence[str] | None = None,
) -> Callable[[ResourceFn], ResourceFn]:
    """Register an async resource that returns text: a static URI, or an RFC 6570 URI template.

    Each template variable is a parameter of the function, bounded like a tool argument; values
    with `..`, absolute paths, NUL, control characters or percent-encoding left after decoding are
    refused. Scopes as for a tool: a caller needs every one of `scopes`, or `open_to_all=True`.
    `complete` maps a template variable to an async function that suggests values.
    A resource that returns bytes is sent as a blob of `mime_type`, which must be one of
    `media_types` (default: `DEFAULT_MEDIA_TYPES` in security/guard/content.py), which checks it.
    """
    check_open(f"resource {uri}", frozenset(scopes), open_to_all)
    declared = Policy(
        kind="resource",
        name="",
        key=uri,
        fn=_unregistered,
        arguments=BaseModel,
        scopes=frozenset(scopes),
        open_to_all=open_to_all,
        rate_limit=guard.limiter.parse(rate_limit) if rate_limit else None,
        per_caller=per_caller,
        timeout=timeout,
        untrusted_output=untrusted_output,
        media_types=allowed_types(media_types),
        mime_type=mime_type,
        completers=dict(complete or {}),
    )

    def register(fn: ResourceFn) -> ResourceFn:
        _register(guard, fn, name or fn.__name__, declared, title=title, description=description)
        return fn

    return register


async def _unregistered() -> str:  # the function of a policy not yet given one
    raise NotImplementedError


def _register(
    guard: Guard,
    fn: Callable[..., Any],
    item: str,
    declared: Policy,
    *,
    title: str | None,
    description: str | None,
) -> None:
    """Complete the declared policy with what fn gives (name, kind, arguments); serve fn under it."""
    uri = declared.key
    arguments = item_arguments("resource", item, fn)
    variables = set(UriTemplate.parse(uri).variable_names)
    if variables != set(arguments.model_fields):
        raise TypeError(
            f"resource {item!r}: the URI variables {sorted(variables)} must be the function's "
            f"parameters {sorted(arguments.model_fields)}"
        )
    kind: Kind = "resource_template" if variables else "resource"
    check_completers(kind, item, declared.completers, arguments)
    policy = replace(declared, kind=kind, name=item, fn=fn, arguments=arguments)
    guarded = guard.results.wrap(fn, policy)
    show_sdk(guarded, fn)  # resolved hints: the SDK validates calls outside the author's module
    described: dict[str, Any] = {
        "name": item,
        "title": title,
        "description": description or inspect.getdoc(fn),
        "mime_type": policy.mime_type,
    }
    if kind == "resource":
        guard.catalogue.add(policy, FunctionResource.from_function(guarded, uri=uri, **described))
    else:
        guard.catalogue.add(policy, ResourceTemplate.from_function(guarded, uri_template=uri, **described))
