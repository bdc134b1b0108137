"""API keys: generation, digests, and constant-time verification (several keys at once for rotation)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from mcp.server.auth.provider import AccessToken

from .principal import ADMIN_SCOPE, ALL_TOOL_SCOPES

KEY_PREFIX = "mcp_"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
# Visible ASCII only: a key with spaces or control characters would break the Authorization header.
_RAW_KEY = re.compile(r"^[\x21-\x7e]{16,512}$")


class KeyFormatError(ValueError):
    """A configured key is neither a usable raw key nor a sha256:<hex> digest."""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest_of(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _parse_entry(entry: str, variable: str, position: int) -> bytes:
    if match := _DIGEST.match(entry.lower()):
        return bytes.fromhex(match.group(1))
    if entry.lower().startswith("sha256:"):
        raise KeyFormatError(
            f"{variable} entry {position}: a digest must be sha256: followed by 64 hex digits"
        )
    if not _RAW_KEY.match(entry):
        raise KeyFormatError(f"{variable} entry {position}: a key must be 16 to 512 visible ASCII characters")
    return hashlib.sha256(entry.encode()).digest()


def parse_keys(value: str, variable: str) -> list[bytes]:
    """Turn `key1,sha256:<hex>,...` into SHA-256 digests; raw keys are hashed at once and not kept."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    return [_parse_entry(entry, variable, position) for position, entry in enumerate(entries, start=1)]


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    key_id: str
    scope: str


class ApiKeyVerifier:
    """The SDK's TokenVerifier for API keys: constant-time comparison against every configured key."""

    def __init__(self, tool_keys: list[bytes], admin_keys: list[bytes]) -> None:
        self._keys = [_Key(d, _key_id(d), ALL_TOOL_SCOPES) for d in tool_keys]
        self._keys += [_Key(d, _key_id(d), ADMIN_SCOPE) for d in admin_keys]

    def __bool__(self) -> bool:
        return bool(self._keys)

    async def verify_token(self, token: str) -> AccessToken | None:
        if len(token) > 512:
            return None
        candidate = hashlib.sha256(token.encode()).digest()
        found: _Key | None = None
        for key in self._keys:  # no early exit: timing does not reveal which key matched
            if hmac.compare_digest(candidate, key.digest):
                found = key
        if found is None:
            return None
        # The key itself is not kept on the token: only its fingerprint names the caller.
        return AccessToken(token="", client_id=found.key_id, scopes=[found.scope])  # nosec B106


def _key_id(digest: bytes) -> str:
    # A short fingerprint of the digest names the key in events without revealing it.
    return "key:" + digest.hex()[:12]
