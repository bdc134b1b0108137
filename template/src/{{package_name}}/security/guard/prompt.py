"""`@guard.prompt(...)`: register an async function as a prompt, with its policy and the SDK's Prompt."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from mcp.server.mcpserver.prompts import Prompt

from .arguments import check_completers, item_arguments, show_sdk
from .catalogue import Completer, Policy, check_open
from .consent import asking
from .content import PromptOutput
from .content import media_types as allowed_types

if TYPE_CHECKING:
    from .core import Guard

PromptFn = TypeVar("PromptFn", bound=Callable[..., Awaitable[PromptOutput]])


def prompt(
    guard: Guard,
    *,
    scopes: tuple[str, ...] = (),
    open_to_all: bool = False,
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    untrusted_output: str | None = None,
    rate_limit: str | None = None,
    per_caller: bool = True,
    timeout: float | None = None,
    complete: Mapping[str, Completer] | None = None,
    media_types: Sequence[str] | None = None,
) -> Callable[[PromptFn], PromptFn]:
    """Register an async prompt that returns its text (one user message), or messages.

    Scopes as for a tool: a caller needs every one of `scopes`, or `open_to_all=True`.
    Arguments are bounded and validated like a tool's. `complete` maps an argument name to an
    async function that suggests values for it (`completion/complete`). Messages (or bare content
    blocks, one user message each) may carry images, audio and embedded resources, checked by
    security/guard/content.py against `media_types` like a tool's. A parameter annotated
    `Annotated[T, Resolve(fn)]` is filled by the SDK before the prompt runs, as for a tool.
    """
    allowed = allowed_types(media_types)

    def register(fn: PromptFn) -> PromptFn:
        item = name or fn.__name__
        check_open(f"prompt {item}", frozenset(scopes), open_to_all)
        arguments = item_arguments("prompt", item, fn, resolvers=True)
        check_completers("prompt", item, complete, arguments)
        policy = Policy(
            kind="prompt",
            name=item,
            key=item,
            fn=fn,
            arguments=arguments,
            scopes=frozenset(scopes),
            open_to_all=open_to_all,
            rate_limit=guard.limiter.parse(rate_limit) if rate_limit else None,
            per_caller=per_caller,
            timeout=timeout,
            untrusted_output=untrusted_output,
            media_types=allowed,
            completers=dict(complete or {}),
        )
        guarded = guard.results.wrap(fn, policy)
        show_sdk(guarded, fn)  # resolved hints: the SDK validates calls outside the author's module
        guarded, keys = asking(item, fn, guarded)
        served = Prompt.from_function(
            guarded, name=item, title=title, description=description or inspect.getdoc(fn)
        )
        guard.catalogue.add(replace(policy, input_keys=keys), served)
        return fn

    return register
