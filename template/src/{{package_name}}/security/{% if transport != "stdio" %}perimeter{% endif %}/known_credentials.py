"""Credentials already verified from each client address, so a blocked address costs no verification.

While an address is blocked (blocking.py) nothing it sends is verified: no key lookup, no JWT signature,
no introspection call. A credential that authenticated from that same address within the last hour (and
before its own expiry) is still admitted, so the people behind a NAT who were already working keep
working when one of them, or a guesser among them, gets the address blocked; every other credential,
right or wrong, gets the same 429. The address learns nothing it did not already know: only credentials
it has used successfully itself pass. Kept per replica, in memory, as digests (never the credential).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from mcp.server.auth.provider import AccessToken

REMEMBER_SECONDS = 3_600
MAX_REMEMBERED = 10_000


class KnownCredentials:
    """A bounded map of (address, credential digest) to the token it verified as, until it expires."""

    def __init__(self, *, remember_seconds: float = REMEMBER_SECONDS, capacity: int = MAX_REMEMBERED) -> None:
        self.remember_seconds = remember_seconds
        self.capacity = capacity
        self._known: OrderedDict[bytes, tuple[AccessToken, float]] = OrderedDict()

    def remember(self, address: str, credential: str, token: AccessToken) -> None:
        until = time.time() + self.remember_seconds
        if token.expires_at is not None:
            until = min(until, float(token.expires_at))
        key = _key(address, credential)
        self._known[key] = (token, until)
        self._known.move_to_end(key)
        while len(self._known) > self.capacity:
            self._known.popitem(last=False)  # the least recently verified goes first

    def recall(self, address: str, credential: str) -> AccessToken | None:
        key = _key(address, credential)
        found = self._known.get(key)
        if found is None:
            return None
        token, until = found
        if time.time() >= until:
            del self._known[key]
            return None
        return token


def _key(address: str, credential: str) -> bytes:
    return hashlib.sha256(address.encode() + b"\0" + credential.encode()).digest()
