"""Anomaly detection beyond failed logins: one `anomaly_detected` event per rule, principal and window.

Rules, each judged per identifier (the principal, or the client address for refusals before
authentication), in windows of MCP_ANOMALY_WINDOW_SECONDS:
- `call_rate` (medium): tool calls in this window reach MCP_ANOMALY_MIN_CALLS and MCP_ANOMALY_RATE_FACTOR
  times the principal's own average over its previous MCP_ANOMALY_BASELINE_WINDOWS windows (judged once
  it has at least 3 windows of history: a new principal has no baseline; the rate limit covers it).
- `refusal_burst` (high): MCP_ANOMALY_REFUSAL_THRESHOLD refusals (validation, scope, rate limits) in one
  window: someone probing what the server allows.
- `first_destructive_use` (medium): the first call of a destructive tool by a principal.
State is in memory, per process (per replica): at most MCP_ANOMALY_MAX_PRINCIPALS identifiers, the least
recently seen forgotten first, each a few counters. Behind a load balancer each replica judges the
traffic it sees; with N replicas a principal's share is about 1/N on each, which the baseline follows.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .events import SecurityEvent, SecurityEvents, Severity

REFUSALS = frozenset({"input_validation_failed", "authorization_denied", "rate_limit_exceeded"})
MIN_HISTORY_WINDOWS = 3
EVENT = "anomaly_detected"


@dataclass(frozen=True, slots=True)
class Thresholds:
    window_seconds: float = 60
    baseline_windows: int = 10
    rate_factor: float = 5.0
    min_calls: int = 30
    refusal_threshold: int = 20
    max_principals: int = 10_000


@dataclass(slots=True)
class _Track:
    """What is kept for one identifier: bounded by the thresholds, whatever it sends."""

    window: int  # index of the current window
    first_window: int
    calls: int = 0
    refusals: int = 0
    history: deque[int] = field(default_factory=deque)  # calls in the previous windows, newest last
    fired: set[tuple[str, str]] = field(default_factory=set)  # rules fired in the current window
    destructive_used: set[str] = field(default_factory=set)


class AnomalyDetector:
    """An events listener (SecurityEvents.subscribe) that writes `anomaly_detected` events."""

    def __init__(
        self,
        events: SecurityEvents,
        thresholds: Thresholds,
        destructive_tools: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.thresholds = thresholds
        self.destructive_tools = frozenset(destructive_tools)
        self._clock = clock
        self._tracks: OrderedDict[str, _Track] = OrderedDict()

    @property
    def tracked(self) -> int:
        return len(self._tracks)

    async def __call__(self, event: SecurityEvent) -> None:
        if event.event == EVENT:
            return
        ran = "outcome" in event.details  # written by the guard after a tool ran (or asked to run)
        refused = event.event in REFUSALS and not ran
        if not (ran or refused):
            return
        track = self._track(event.identifier)
        if refused:
            track.refusals += 1
            if track.refusals >= self.thresholds.refusal_threshold:
                await self._fire(
                    track,
                    event,
                    "refusal_burst",
                    "high",
                    refusals=track.refusals,
                    window_seconds=self.thresholds.window_seconds,
                    threshold=self.thresholds.refusal_threshold,
                )
            return
        track.calls += 1
        await self._check_rate(track, event)
        tool = event.tool
        if tool in self.destructive_tools and tool not in track.destructive_used:
            track.destructive_used.add(tool)
            await self._fire(track, event, "first_destructive_use", "medium", key=tool, first_use_of=tool)

    def _track(self, identifier: str) -> _Track:
        now = int(self._clock() // self.thresholds.window_seconds)
        track = self._tracks.get(identifier)
        if track is None:
            track = _Track(window=now, first_window=now)
            self._tracks[identifier] = track
            if len(self._tracks) > self.thresholds.max_principals:
                self._tracks.popitem(last=False)
            return track
        self._tracks.move_to_end(identifier)
        if now != track.window:
            # Close the finished window, and count the silent ones since as zero calls.
            skipped = min(now - track.window - 1, self.thresholds.baseline_windows)
            track.history.append(track.calls)
            track.history.extend([0] * skipped)
            while len(track.history) > self.thresholds.baseline_windows:
                track.history.popleft()
            track.window, track.calls, track.refusals = now, 0, 0
            track.fired.clear()
        return track

    async def _check_rate(self, track: _Track, event: SecurityEvent) -> None:
        limits = self.thresholds
        if len(track.history) < MIN_HISTORY_WINDOWS or track.calls < limits.min_calls:
            return
        baseline = sum(track.history) / len(track.history)
        if track.calls >= limits.rate_factor * baseline:
            await self._fire(
                track,
                event,
                "call_rate",
                "medium",
                calls=track.calls,
                window_seconds=limits.window_seconds,
                baseline_per_window=round(baseline, 2),
                baseline_windows=len(track.history),
                factor=limits.rate_factor,
            )

    async def _fire(
        self,
        track: _Track,
        event: SecurityEvent,
        rule: str,
        severity: Severity,
        key: str = "",
        **figures: Any,
    ) -> None:
        if (rule, key) in track.fired:
            return
        track.fired.add((rule, key))
        await self.events.record(
            EVENT,
            severity,
            event.identifier,
            tool=event.tool,
            request_id=event.request_id,
            rule=rule,
            trigger=event.event,
            **figures,
        )
