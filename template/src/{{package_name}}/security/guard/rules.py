"""Cross-field rules a tool publishes in its input schema (`@guard.tool(schema_keywords=...)`), enforced.

A tool's schema comes from its parameters (bounded, `additionalProperties: false`); pydantic writes JSON
Schema 2020-12. Rules between fields ("phone is required when contactMethod is phone") have no
parameter form, so a tool may add the 2020-12 keywords that can only narrow what its parameters accept
(`NARROWING`). The guard then publishes the schema with its `$schema` and validates every call against
all of it, so a client is never told of a rule the server does not hold.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Each of these adds a condition; none can widen what the parameters' own schema accepts.
NARROWING = frozenset(
    {
        "$schema",
        "$comment",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "examples",
    }
)
ArgumentsCheck = Callable[[Any], list[str]]


def with_keywords(
    tool: str, schema: dict[str, Any], keywords: Mapping[str, Any]
) -> tuple[dict[str, Any], ArgumentsCheck]:
    """The published schema, and a check that returns the rules a call breaks (schema paths, no values)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    wider = sorted(set(keywords) - NARROWING)
    if wider:
        raise TypeError(
            f"tool {tool!r}: schema_keywords may add only {', '.join(sorted(NARROWING))}; "
            f"{', '.join(wider)} come from the function's parameters"
        )
    if keywords.get("$schema", DIALECT) != DIALECT:
        raise TypeError(f"tool {tool!r}: $schema must be {DIALECT} (the dialect of the parameters' schema)")
    _local_refs_only(tool, keywords)
    published = {"$schema": DIALECT, **schema, **copy.deepcopy(dict(keywords))}
    try:
        Draft202012Validator.check_schema(published)
    except SchemaError as exc:
        raise TypeError(f"tool {tool!r}: schema_keywords is not valid JSON Schema: {exc.message}") from None
    validator = Draft202012Validator(published)

    def broken_rules(arguments: Any) -> list[str]:
        errors = validator.iter_errors(arguments)
        return sorted({"/".join(str(p) for p in e.absolute_schema_path) or "(root)" for e in errors})

    return published, broken_rules


def _local_refs_only(tool: str, value: Any) -> None:
    """A `$ref` names a definition in this schema: the server never fetches a schema from elsewhere."""
    if isinstance(value, Mapping):
        ref = value.get("$ref")
        if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
            raise TypeError(f"tool {tool!r}: schema_keywords may refer only within the schema ('#/...')")
        for item in value.values():
            _local_refs_only(tool, item)
    elif isinstance(value, list):
        for item in value:
            _local_refs_only(tool, item)
