"""Anomaly response: a client address that keeps failing authentication is blocked for a while.

MCP_AUTH_FAILURE_THRESHOLD failures within MCP_AUTH_FAILURE_WINDOW_SECONDS block the address for
MCP_AUTH_BLOCK_SECONDS (one `client_blocked` event of high severity). Only a request that presents a
credential can fail: one without any (an OAuth client's first request, by design) is never counted, and
always gets the 401 challenge, blocked address or not, so sign-in cannot lock out an office.

While blocked, nothing the address sends is verified (no key lookup, no signature check, no
introspection call): every credential gets the same 429, right or wrong, except one that already
authenticated from this address within the hour (known_credentials.py), so colleagues behind the same
NAT who were working keep working, and a guesser learns nothing it did not already know. Failures and
blocks are counted in the rate-limit storage, so replicas sharing MCP_RATE_LIMIT_STORAGE share them too.
"""

from __future__ import annotations

from limits import RateLimitItemPerSecond
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...server.services import Services
from ...settings import Settings
from ..audit.events import SecurityEvents
from ..limits import RateLimiter, RateLimitUnavailableError
from .auth import RECALLED, bearer_token, carries_credential, is_public_path
from .common import client_address, refusal, send_json
from .known_credentials import KnownCredentials


class AuthFailureBlock:
    """Wraps BearerAuth: counts its 401 answers per client address and blocks repeat offenders."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        events: SecurityEvents,
        *,
        threshold: int,
        window_seconds: int,
        block_seconds: int,
        known: KnownCredentials,
    ) -> None:
        if threshold < 1 or window_seconds < 1 or block_seconds < 1:
            raise ValueError("auth failure threshold, window and block time must be at least 1")
        self.app = app
        self.limiter = limiter
        self.events = events
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.block_seconds = block_seconds
        self.known = known
        self.failures = RateLimitItemPerSecond(threshold, window_seconds)
        # One slot per block period: taken means blocked, and it frees itself when the period ends.
        self.block = RateLimitItemPerSecond(1, block_seconds)

    @classmethod
    def from_settings(
        cls, app: ASGIApp, services: Services, settings: Settings, known: KnownCredentials
    ) -> AuthFailureBlock:
        return cls(
            app,
            services.limiter,
            services.events,
            threshold=settings.auth_failure_threshold,
            window_seconds=settings.auth_failure_window_seconds,
            block_seconds=settings.auth_block_seconds,
            known=known,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or is_public_path(path) or not carries_credential(scope):
            await self.app(scope, receive, send)  # nothing presented: the challenge, never a failure
            return
        client = client_address(scope)
        try:
            state = await self.limiter.peek(self.block, "auth-block", client)
        except RateLimitUnavailableError:
            await self.events.record(
                "client_blocked", "high", client, reason="storage_down", path=path, anonymous=True
            )
            await send_json(
                send,
                503,
                refusal("unavailable", "Client blocking is unavailable, so requests are refused."),
                {"Retry-After": "5"},
            )
            return
        if not state.allowed:
            credential = bearer_token(scope)
            recalled = None if credential is None else self.known.recall(client, credential)
            if recalled is None:
                await self._refuse(send, client, state.reset_after, path)
                return
            scope.setdefault("state", {})[RECALLED] = recalled
            await self.app(scope, receive, send)
            return
        replaced = False

        async def counted_send(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 401:
                over = await self._count_failure(client)
                if over is not None:  # concurrent failures took the last ones meanwhile: exactly N get 401
                    replaced = True
                    await self._refuse(send, client, over, path)
                    return
            elif message["type"] == "http.response.body" and replaced:
                return
            await send(message)

        await self.app(scope, receive, counted_send)

    async def _refuse(self, send: Send, client: str, retry_after: int, path: str) -> None:
        await self.events.record(
            "client_blocked",
            "medium",
            client,
            reason="blocked after repeated authentication failures",
            retry_after=retry_after,
            path=path,
            anonymous=True,
        )
        message = f"Too many failed authentications; retry after {retry_after} seconds."
        await send_json(send, 429, refusal("client_blocked", message), {"Retry-After": str(retry_after)})

    async def _count_failure(self, client: str) -> int | None:
        """Count one failure; the seconds the block has left if this one was past the threshold."""
        try:
            # Fixed window (from an address's first failure): one counter per address, since anyone can
            # fail from many addresses; a moving window kept a timestamp list and a lock for each.
            failures = await self.limiter.hit(self.failures, "auth-failures", client, window="fixed")
            if failures.allowed and failures.remaining > 0:
                return None
            blocked = await self.limiter.hit(self.block, "auth-block", client)
        except RateLimitUnavailableError:
            return None  # the next request meets the same storage and is refused there
        if blocked.allowed:  # this request took the block slot: record the block once
            await self.events.record(
                "client_blocked",
                "high",
                client,
                reason="repeated authentication failures",
                failures=self.threshold,
                window_seconds=self.window_seconds,
                block_seconds=self.block_seconds,
                anonymous=True,
            )
        if failures.allowed:
            return None  # the threshold-th failure itself is answered 401
        return self.block_seconds if blocked.allowed else blocked.reset_after
