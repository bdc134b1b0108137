"""RFC 7662 token introspection: opaque access tokens checked by the issuer."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any

import httpx2

from ..common import CredentialRejectedError, NamedAccessToken
from .claims import LEEWAY_SECONDS, check_audience, named_token

# RFC 7662 token_type values of an access token (refresh tokens are refused).
ACCEPTED_TOKEN_TYPES = frozenset({"bearer", "access_token"})  # nosec B105 - names, not secrets
INTROSPECTION_TIMEOUT_SECONDS = 5
INTROSPECTION_CACHE_SIZE = 10_000
log = logging.getLogger(__package__)  # one logger for the oauth package, as when it was one module


class Introspection:
    """RFC 7662: ask the issuer about an opaque token, authenticated as this server (client_secret_basic).

    Active answers are cached by the token's SHA-256 for at most `cache_seconds` and never past the
    token's `exp`, so a revoked token stays usable for at most that long. Refusals are not cached.
    When the endpoint cannot be reached or answers with anything but JSON, the token is refused.
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        client_secret: str,
        issuer: str,
        audience: str,
        allow_missing_audience: bool = False,
        groups_claim: str = "groups",
        cache_seconds: float = 60,
        max_entries: int = INTROSPECTION_CACHE_SIZE,
    ) -> None:
        self.url = url
        self._auth = httpx2.BasicAuth(client_id, client_secret)
        self.issuer = issuer
        self.audience = audience
        self.allow_missing_audience = allow_missing_audience
        self.groups_claim = groups_claim
        self._ttl = cache_seconds
        self._max_entries = max_entries
        self._cache: OrderedDict[bytes, tuple[float, NamedAccessToken]] = OrderedDict()

    async def check(self, token: str) -> NamedAccessToken:
        key = hashlib.sha256(token.encode()).digest()
        now = time.time()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > now:
                return cached[1]
            del self._cache[key]
        answer = await self._ask(token)
        result = self._accept(answer, now)
        until = now + self._ttl
        if result.expires_at is not None:
            until = min(until, result.expires_at)
        if until > now:
            self._cache[key] = (until, result)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return result

    async def _ask(self, token: str) -> dict[str, Any]:
        try:
            async with httpx2.AsyncClient(timeout=INTROSPECTION_TIMEOUT_SECONDS) as client:
                response = await client.post(
                    self.url,
                    data={"token": token, "token_type_hint": "access_token"},  # nosec B105 - a name
                    auth=self._auth,
                    headers={"Accept": "application/json"},
                )
            answer = response.json() if response.status_code == 200 else None
        except (httpx2.HTTPError, ValueError) as exc:
            log.warning("token introspection failed: %s", type(exc).__name__)
            answer = None
        if not isinstance(answer, dict):
            if answer is None:
                log.warning("token introspection answered without a JSON object")
            raise CredentialRejectedError("introspection_unavailable")
        return answer

    def _accept(self, answer: dict[str, Any], now: float) -> NamedAccessToken:
        if answer.get("active") is not True:
            raise CredentialRejectedError("inactive_token")
        if str(answer.get("token_type", "bearer")).lower() not in ACCEPTED_TOKEN_TYPES:
            raise CredentialRejectedError("not_an_access_token")
        if "iss" in answer and answer["iss"] != self.issuer:
            raise CredentialRejectedError("wrong_issuer")
        exp = answer.get("exp")
        if isinstance(exp, int | float) and exp + LEEWAY_SECONDS < now:
            raise CredentialRejectedError("expired")
        check_audience(answer.get("aud"), self.audience, self.allow_missing_audience)
        return named_token(answer, self.audience, self.groups_claim)
