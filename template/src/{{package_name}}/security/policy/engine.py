"""The policy decision: one parsed policy set, validated against the schema, asked once per request.

`Policies` holds the current set; `reload()` builds a new one completely (read, parse, validate) and
swaps it in with one assignment, so every decision uses one set or the other, never a mix, and a set
that fails keeps the running one.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from ..identity.principal import Principal
from .base import DESTRUCTIVE, NAMESPACE, READ_ONLY, PolicyError
from .encode import Encoder, Unrepresentable
from .model import Model
from .slices import CONTEXT, Slice, by_action
from .source import Written, read_policies
from .validation import validate

NO_POLICY = "no policy permits it"
MAX_CACHED_PRINCIPALS = 1_000
MAX_REMEMBERED_DECISIONS = 4_096
MAX_REMEMBERED_VALUE = 512


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    deciding: tuple[str, ...]  # the ids of the policies that decided (permits, or the forbids)
    reason: str = ""  # why a denial had no deciding policy
    errors: tuple[str, ...] = ()  # ids of policies that could not be evaluated (they were skipped)

    @property
    def explained(self) -> str:
        return ", ".join(self.deciding) if self.deciding else self.reason


@dataclass(frozen=True, slots=True)
class Loaded:
    written: tuple[Written, ...]
    slices: Mapping[str, Slice]  # per action: the policies that can apply to it (slices.py)
    # Decisions that do not read the arguments, by what they do read (principal, action, client, extra):
    # Cedar is deterministic, so the same request gets the same answer from the same set. A reload builds a
    # new Loaded, so a remembered decision never outlives the set that made it.
    remembered: dict[tuple[Any, ...], Decision] = field(default_factory=dict)

    def recall(self, key: tuple[Any, ...] | None) -> Decision | None:
        return None if key is None else self.remembered.get(key)

    def remember(self, key: tuple[Any, ...] | None, decision: Decision) -> None:
        if key is not None:
            _keep(self.remembered, key, decision, MAX_REMEMBERED_DECISIONS)


class Policies:
    """The policies in `directory`, checked against `model`; `decide` asks them about one request."""

    def __init__(self, directory: Path, model: Model, server: str) -> None:
        self.directory = directory
        self.model = model
        self.server = {"type": f"{NAMESPACE}::Server", "id": server}
        self._encoder = Encoder(model.schema)
        base = [*_action_entities(model), {"uid": self.server, "attrs": {}, "parents": []}]
        self._base = cedarpy.Entities.from_json_str(json.dumps(base))
        # Parsed once per principal (the actions' graph with them), not per call: bounded, oldest out.
        self._entities: dict[Principal, cedarpy.Entities] = {}
        self._current = self._load()

    @property
    def written(self) -> tuple[Written, ...]:
        return self._current.written

    def reload(self) -> int:
        """Read the policies again; raises PolicyError (the running set stays) or returns how many."""
        loaded = self._load()
        self._current = loaded  # one assignment: a decision sees the old set or the new one
        return len(loaded.written)

    def _load(self) -> Loaded:
        written = tuple(read_policies(self.directory))
        if not written:
            raise PolicyError(
                f"{self.directory}: no policy left; with policies on, every call would be refused. Write "
                "one (the starter policy permits what scopes permit), or remove the .cedar files"
            )
        validate(written, self.model)
        return Loaded(written, by_action(written, self.model.groups))

    def decide(
        self,
        principal: Principal,
        action: str,
        arguments: Any,
        *,
        client: str,
        extra: Mapping[str, str] | None = None,
    ) -> Decision:
        """Whether `principal` may do `action` with `arguments` (validated) from `client`."""
        current = self._current
        cut = current.slices.get(action)
        if cut is None:
            return Decision(False, (), "not an action of this server")
        if cut.policy_set is None:  # known without asking: unconditional permits, or no policy at all
            return Decision(bool(cut.permits), cut.permits, "" if cut.permits else NO_POLICY)
        key = _request_key(principal, action, client, extra, cut.reads)
        remembered = current.recall(key)
        if remembered is not None:
            return remembered
        try:
            context = self.context(action, arguments, client, extra, reads=cut.reads)
        except Unrepresentable:
            return Decision(False, (), "an argument Cedar cannot represent")
        request = {
            "principal": {"type": f"{NAMESPACE}::Principal", "id": principal.uid},
            "action": {"type": f"{NAMESPACE}::Action", "id": action},
            "resource": self.server,
            "context": context,
        }
        result = cedarpy.is_authorized(request, cut.policy_set, self._entities_with(principal))
        deciding = tuple(result.diagnostics.reasons)
        errors = result.diagnostics.errors
        errored = (
            tuple(w.id for w in current.written if any(f"`{w.id}`" in e for e in errors)) if errors else ()
        )
        decision = Decision(
            result.allowed, deciding, "" if deciding or result.allowed else NO_POLICY, errored
        )
        current.remember(key, decision)
        return decision

    def asks(self, action: str) -> bool:
        """Whether deciding `action` reads the request (else it is decided by the policies alone)."""
        cut = self._current.slices.get(action)
        return cut is not None and cut.policy_set is not None and "input" in cut.reads

    def _entities_with(self, principal: Principal) -> cedarpy.Entities:
        entities = self._entities.get(principal)
        if entities is None:
            entities = self._base.with_added_json_str(json.dumps([principal_entity(principal)]))
            _keep(self._entities, principal, entities, MAX_CACHED_PRINCIPALS)
        return entities

    def context(
        self,
        action: str,
        arguments: Any,
        client: str,
        extra: Mapping[str, str] | None = None,
        *,
        reads: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """The request's context (`reads`: only those attributes, the ones its policies name)."""
        kind = self.model.inputs.get(action)
        if kind is None:
            raise Unrepresentable("unknown action")
        wanted = CONTEXT if reads is None else reads
        context: dict[str, Any] = {k: v for k, v in (extra or {}).items() if k in wanted}
        if "input" in wanted:
            context["input"] = self._encoder.encode(kind, _plain(arguments))
        if "transport" in wanted:
            context["transport"] = "stdio" if client == "stdio" else "http"
        if "client_address" in wanted:
            context["client_address"] = {"__extn": {"fn": "ip", "arg": address_of(client)}}
        return context


def _keep(cache: dict[Any, Any], key: Any, value: Any, bound: int) -> None:
    """`cache[key] = value`, the oldest entry out when `bound` are held."""
    if len(cache) >= bound:
        cache.pop(next(iter(cache)), None)
    cache[key] = value


def _request_key(
    principal: Principal,
    action: str,
    client: str,
    extra: Mapping[str, str] | None,
    reads: frozenset[str],
) -> tuple[Any, ...] | None:
    """What a decision that does not read the arguments depends on; None for one that does."""
    if "input" in reads:
        return None  # arguments vary call by call: remembering them would only fill memory
    read = tuple(sorted((k, v) for k, v in (extra or {}).items() if k in reads))
    if any(len(v) > MAX_REMEMBERED_VALUE for _, v in read):
        return None  # a long URI is asked every time rather than kept
    seen = client if reads & {"transport", "client_address"} else ""
    return principal, action, seen, read


def _plain(arguments: Any) -> Any:
    """Template values (a mapping of strings or lists) and arguments as JSON data."""
    if isinstance(arguments, Mapping):
        return {
            str(k): "/".join(v) if isinstance(v, list) and all(isinstance(i, str) for i in v) else v
            for k, v in arguments.items()
        }
    return arguments


@functools.lru_cache(maxsize=4096)  # clients come back: their address is parsed once
def address_of(client: str) -> str:
    """The client's address as Cedar's ipaddr: stdio is the local machine; unknown is 0.0.0.0."""
    if client == "stdio":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(client))
    except ValueError:
        return "0.0.0.0"  # noqa: S104  # nosec B104 - an address, not a bind: no office range holds it


def principal_entity(principal: Principal) -> dict[str, Any]:
    return {
        "uid": {"type": f"{NAMESPACE}::Principal", "id": principal.uid},
        "attrs": {
            "kind": principal.kind,
            "name": principal.name,
            "scopes": sorted(principal.scopes),
            "groups": sorted(principal.groups),
        },
        "parents": [],
    }


def _action_entities(model: Model) -> list[dict[str, Any]]:
    """The actions with their groups, so that `action in Mcp::Action::"read_only"` holds."""
    kind = f"{NAMESPACE}::Action"
    entities = [
        {"uid": {"type": kind, "id": name}, "attrs": {}, "parents": [{"type": kind, "id": g} for g in groups]}
        for name, groups in model.groups.items()
    ]
    entities += [
        {"uid": {"type": kind, "id": g}, "attrs": {}, "parents": []} for g in (READ_ONLY, DESTRUCTIVE)
    ]
    return entities
