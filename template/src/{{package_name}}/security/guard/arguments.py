"""What a client may send to a tool, resource template or prompt: the model, its bounds, safe messages.

The model comes from the function's signature; every string, list and number must be bounded
(`check_bounded`, at registration). Parameters the SDK fills (its Context, the guard's Notify, a
`Resolve(...)` value) are not arguments. Validation messages name fields and rules, never values.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from mcp.server.mcpserver import Context, Resolve
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..audit.redact import Redactor
from .call import UnboundedArgumentError
from .notify import Notify

MAX_COMPLETION_CHARS = 200  # the longest value a completion returns, and starts from without a bound
# What a URI template value may not hold after decoding: controls, or percent-encoding left over
# (a second decoding further down would turn %2e%2e into ..).
_UNSAFE_VALUE = re.compile(r"[\x00-\x1f\x7f]|%[0-9A-Fa-f]{2}")


def is_context(annotation: Any) -> bool:
    """The SDK's Context, or the guard's Notify (filled from it): never an argument of the client's."""
    return inspect.isclass(annotation) and issubclass(annotation, (Context, Notify))


def is_resolved(annotation: Any) -> bool:
    """`Annotated[T, Resolve(fn)]`: a value the SDK fills (sampling, roots, a question), not an argument."""
    return typing.get_origin(annotation) is Annotated and any(
        isinstance(m, Resolve) for m in typing.get_args(annotation)[1:]
    )


def notify_parameter(fn: Callable[..., Any]) -> str | None:
    """The name of fn's Notify parameter, if it has one."""
    hints = typing.get_type_hints(fn, include_extras=True)
    return next((name for name, hint in hints.items() if hint is Notify), None)


def sdk_signature(fn: Callable[..., Any]) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """fn's parameters and hints, resolved, as the SDK should see them: a Notify parameter becomes the
    SDK's Context (which the SDK fills), one at most."""
    hints = typing.get_type_hints(fn, include_extras=True)
    injected = [name for name, hint in hints.items() if is_context(hint)]
    if len(injected) > 1:
        raise TypeError(f"{fn.__name__}: take one Notify (or Context) parameter, not {injected}")
    hints = {name: Context if hint is Notify else hint for name, hint in hints.items()}
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(fn).parameters.values()
    ]
    return params, hints


def show_sdk(
    wrapper: Callable[..., Any], fn: Callable[..., Any], extra: Mapping[str, Any] | None = None
) -> None:
    """Give `wrapper` fn's signature with resolved hints (the SDK reads it outside fn's module), plus
    `extra` keyword-only parameters {name: annotation} it fills itself."""
    params, hints = sdk_signature(fn)
    params += [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a) for n, a in (extra or {}).items()
    ]
    wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        params, return_annotation=hints.get("return", inspect.Signature.empty)
    )
    wrapper.__annotations__ = {**hints, **(extra or {})}


def arguments_model(name: str, fn: Callable[..., Any], *, resolvers: bool = False) -> type[BaseModel]:
    """The model of what a client sends; with `resolvers`, parameters the SDK fills are not part of it."""
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name, Any)
        if is_context(annotation) or (resolvers and is_resolved(annotation)):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    model: type[BaseModel] = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid", strict=False), **fields
    )
    return model


def check_bounded(
    name: str,
    schema: dict[str, Any],
    path: str = "",
    defs: dict[str, Any] | None = None,
    *,
    kind: str = "tool",
) -> None:
    """Raise UnboundedArgumentError for the first string, list, number or object without a bound."""
    defs = schema.get("$defs", defs or {})
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        # Nested models: check the definition the reference points at.
        check_bounded(name, defs[ref.removeprefix("#/$defs/")], path, defs, kind=kind)
        return
    kinds = schema.get("type")
    for option in schema.get("anyOf") or schema.get("oneOf") or []:
        check_bounded(name, option, path, defs, kind=kind)
    if "enum" in schema or "const" in schema or kinds is None:
        return
    where = f"{kind} {name!r} argument {path or '(root)'}"
    if kinds == "string" and "maxLength" not in schema:
        raise UnboundedArgumentError(f"{where}: add Field(max_length=...)")
    if kinds == "array":
        if "maxItems" not in schema:
            raise UnboundedArgumentError(f"{where}: add Field(max_length=...) to the list")
        check_bounded(name, schema.get("items", {}), path + "[]", defs, kind=kind)
    if kinds in ("integer", "number") and not (
        ("maximum" in schema or "exclusiveMaximum" in schema)
        and ("minimum" in schema or "exclusiveMinimum" in schema)
    ):
        raise UnboundedArgumentError(f"{where}: add Field(ge=..., le=...)")
    if kinds == "object":
        if schema.get("additionalProperties") is not False:
            raise UnboundedArgumentError(f"{where}: nested models need ConfigDict(extra='forbid')")
        for prop, sub in schema.get("properties", {}).items():
            check_bounded(name, sub, f"{path}.{prop}" if path else prop, defs, kind=kind)


def validation_message(item: str, exc: ValidationError, redactor: Redactor) -> tuple[str, list[str]]:
    """What the caller is told, and the problems the event records: field and rule names only (the
    rejected values are the caller's data), scrubbed like any value (a field name may be the caller's)."""
    problems = sorted(
        {f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['type']}" for e in exc.errors()}
    )
    message = f"Invalid arguments for {item}: {'; '.join(problems[:10])}"
    return redactor.text(message, 1_000), [redactor.text(p, 200) for p in problems]


def unsafe_value(values: Mapping[str, str | list[str]]) -> str | None:
    """The first URI template value (decoded) holding controls, leftover percent-encoding, `..` or a root."""
    for name, value in values.items():
        for part in value if isinstance(value, list) else [value]:
            if _UNSAFE_VALUE.search(part):
                return f"{name}: control character or percent-encoding after decoding"
            # Also here, not only in the SDK's match: its check depends on how the template matched.
            if part.startswith(("/", "\\")) or ".." in part.replace("\\", "/").split("/"):
                return f"{name}: path traversal or absolute path"
    return None


def max_length(arguments: type[BaseModel], name: str) -> int | None:
    """The longest value a completion may start from (the argument's bound); None: no such argument."""
    field_info = arguments.model_fields.get(name)
    if field_info is None:
        return None
    bounds = [getattr(m, "max_length", None) for m in field_info.metadata]
    return min([b for b in bounds if isinstance(b, int)], default=MAX_COMPLETION_CHARS)


def item_arguments(
    kind: str, item: str, fn: Callable[..., Any], *, resolvers: bool = False
) -> type[BaseModel]:
    """The argument model of a resource or prompt function, which must be async and bounded."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{kind} {item!r} must be async so its timeout can cancel it")
    if notify_parameter(fn) is not None:
        raise TypeError(f"{kind} {item!r}: Notify is for tools (a read or a get answers at once)")
    arguments = arguments_model(item, fn, resolvers=resolvers)
    check_bounded(item, arguments.model_json_schema(), kind=kind)
    return arguments


def check_completers(
    kind: str, item: str, complete: Mapping[str, Any] | None, arguments: type[BaseModel]
) -> None:
    unknown = sorted(set(complete or {}) - set(arguments.model_fields))
    if unknown:
        raise TypeError(f"{kind} {item!r}: complete= names unknown arguments {unknown}")
