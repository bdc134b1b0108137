"""`check`'s report on API keys: how many, who holds them, what each reaches, and which have no name.
Never a key or a digest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import answers

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ..security.guard import Guard
    from ..settings import Settings


def key_holders(settings: Settings, *, tool_keys: bool) -> list[str]:
    """Who holds a key, and with what scopes: names (or fingerprints), never keys or digests."""
    from ..security.identity.keys import KeyFormatError, describe, parse_keys

    configured = [("MCP_ADMIN_API_KEYS", settings.admin_api_keys)]
    if tool_keys:
        configured.insert(0, ("MCP_API_KEYS", settings.api_keys))
    facts: list[str] = []
    for variable, value in configured:
        try:
            entries = parse_keys(value.get_secret_value(), variable)
        except KeyFormatError:
            continue  # credential_problems reported it
        admin = variable == "MCP_ADMIN_API_KEYS"
        facts.extend(f"{variable} key {holder}" for holder in describe(entries, admin=admin))
    return facts


def key_reach(settings: Settings, guard: Guard) -> list[str]:
    """For each tool key's holder, the tools, resources and prompts it reaches (`Policy.admits`)."""
    from ..security.identity.keys import KeyFormatError, parse_keys

    try:
        entries = parse_keys(settings.api_keys.get_secret_value(), "MCP_API_KEYS")
    except KeyFormatError:
        return []  # credential_problems reported it
    facts = []
    for holder, scopes in {key.principal_id: key.scopes for key in entries}.items():
        reached: dict[str, list[str]] = {}
        for policy in guard.catalogue.reachable(scopes):
            reached.setdefault(_KINDS[policy.kind], []).append(policy.key)
        parts = [f"{kind} {', '.join(sorted(keys))}" for kind, keys in sorted(reached.items())]
        facts.append(f"MCP_API_KEYS key {holder} reaches: {'; '.join(parts) or 'nothing served'}")
    return facts


_KINDS = {
    "tool": "tools",
    "resource": "resources",
    "resource_template": "resource templates",
    "prompt": "prompts",
}


def unnamed_keys(settings: Settings, *, tool_keys: bool) -> list[str]:
    """Keys with no name: the audit trail shows a fingerprint, and `keys` cannot rotate them by name."""
    from ..security.identity.keys import KeyFormatError, parse_keys

    configured = [("MCP_ADMIN_API_KEYS", settings.admin_api_keys, " --admin")]
    if tool_keys:
        configured.insert(0, ("MCP_API_KEYS", settings.api_keys, ""))
    warnings = []
    for variable, value, flag in configured:
        try:
            unnamed = [key for key in parse_keys(value.get_secret_value(), variable) if key.name is None]
        except KeyFormatError:
            continue  # credential_problems reported it
        if unnamed:
            names = ", ".join(key.principal_id for key in unnamed)
            warnings.append(
                f"{variable}: {len(unnamed)} unnamed key(s) ({names}): give each holder a named key "
                f"(`{answers.COMMAND} keys add NAME{flag}`), then `keys revoke {unnamed[0].principal_id}"
                f"{flag}`, so that the audit trail names them and `keys` can rotate them"
            )
    return warnings


def key_counts(settings: Settings, scheme: str) -> str:
    """How many keys of each kind are configured; never the keys."""

    def count(value: SecretStr) -> int:
        return len([entry for entry in value.get_secret_value().split(",") if entry.strip()])

    admin = f"{count(settings.admin_api_keys)} admin key(s) in MCP_ADMIN_API_KEYS"
    if scheme != "api_key":
        return f"keys: {admin}"
    return f"keys: {count(settings.api_keys)} tool key(s) in MCP_API_KEYS, {admin}"
