"""Arguments as Cedar data: each value encoded as the schema types it, never written into policy text.

The value goes to Cedar as JSON (strings stay strings whatever they hold), so a hostile argument can
only be a value a policy compares: it cannot change what the policy says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

_LONG = (-(2**63), 2**63 - 1)
_DECIMAL_MAX = Decimal("922337203685477.5807")
_BUILTIN = {"String": "String", "Long": "Long", "Bool": "Boolean", "Boolean": "Boolean"}
_EXTENSIONS = frozenset({"decimal", "ipaddr", "datetime", "duration"})


class Unrepresentable(ValueError):
    """A value Cedar cannot hold as its schema types it (a number out of range, say)."""


class Encoder:
    """Encodes values for one schema (Cedar JSON format), resolving its common and entity types."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._common: dict[str, Any] = {}
        self._entities: set[str] = set()
        for namespace, body in schema.items():
            for name, shape in (body.get("commonTypes") or {}).items():
                self._common[f"{namespace}::{name}"] = (namespace, shape)
            for name in body.get("entityTypes") or {}:
                self._entities.add(f"{namespace}::{name}")

    def encode(self, kind: Mapping[str, Any], value: Any, namespace: str = "Mcp") -> Any:
        tag = kind.get("type")
        if tag in ("EntityOrCommon", "Entity", "Extension"):
            return self._named(str(kind["name"]), value, namespace, tag)
        if tag == "Record":
            return self._record(kind, value, namespace)
        if tag == "Set":
            if not isinstance(value, list | tuple):
                raise Unrepresentable("a set needs a list")
            return [self.encode(kind["element"], item, namespace) for item in value]
        if isinstance(tag, str):
            return self._named(tag, value, namespace, "EntityOrCommon")
        raise Unrepresentable("unknown type")

    def _named(self, name: str, value: Any, namespace: str, tag: str) -> Any:
        if name in _BUILTIN:
            return _primitive(_BUILTIN[name], value)
        if name in _EXTENSIONS:
            return _extension(name, value)
        qualified = name if "::" in name else f"{namespace}::{name}"
        if tag != "Entity" and qualified in self._common:
            home, shape = self._common[qualified]
            return self.encode(shape, value, home)
        if qualified in self._entities:
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise Unrepresentable("an enumerated value must be a string")
            return {"__entity": {"type": qualified, "id": str(value)}}
        raise Unrepresentable(f"unknown type {name}")

    def _record(self, kind: Mapping[str, Any], value: Any, namespace: str) -> dict[str, Any]:
        attributes: Mapping[str, Any] = kind.get("attributes") or {}
        if attributes and all(name.startswith("typeChoice") for name in attributes):
            return self._choice(attributes, value, namespace)
        if not isinstance(value, Mapping):
            raise Unrepresentable("a record needs an object")
        record: dict[str, Any] = {}
        for name, attribute in attributes.items():
            if value.get(name) is not None:
                record[name] = self.encode(attribute, value[name], namespace)
            elif attribute.get("required", True):
                raise Unrepresentable(f"{name} is required")
        return record

    def _choice(self, attributes: Mapping[str, Any], value: Any, namespace: str) -> dict[str, Any]:
        """A union (`anyOf`): the first choice that can hold the value."""
        for name, attribute in attributes.items():
            try:
                return {name: self.encode(attribute, value, namespace)}
            except Unrepresentable:
                continue
        raise Unrepresentable("no choice of the union holds the value")


def _primitive(kind: str, value: Any) -> Any:
    if kind == "String" and isinstance(value, str):
        return value
    if kind == "Boolean" and isinstance(value, bool):
        return value
    if kind == "Long" and isinstance(value, int) and not isinstance(value, bool):
        if _LONG[0] <= value <= _LONG[1]:
            return value
        raise Unrepresentable("a whole number beyond Cedar's 64 bits")
    raise Unrepresentable(f"not a {kind}")


def _extension(name: str, value: Any) -> Any:
    if name == "decimal":
        return {"__extn": {"fn": "decimal", "arg": decimal_text(value)}}
    if name == "ipaddr" and isinstance(value, str):
        return {"__extn": {"fn": "ip", "arg": value}}
    raise Unrepresentable(f"not a {name}")


def decimal_text(value: Any) -> str:
    """A number as Cedar's decimal: four places (rounded), within its range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unrepresentable("not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Unrepresentable("not a finite number")
    try:
        number = Decimal(str(value)).quantize(Decimal("0.0001"))
    except InvalidOperation:
        raise Unrepresentable("a number beyond Cedar's decimal") from None
    if abs(number) > _DECIMAL_MAX:
        raise Unrepresentable("a number beyond Cedar's decimal")
    return f"{number:f}"
