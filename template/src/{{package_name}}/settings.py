"""All configuration in one typed object, read from MCP_* variables and `.env`, checked at start-up."""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import answers
from .env_file import problems as env_file_problems
from .samples.settings import SampleSettings, absent_sample
from .tool_settings import ToolSettings

ENV_PREFIX = "MCP_"
# The asymmetric JWS algorithms PyJWT verifies (with `cryptography`); names are case-sensitive (RFC 7518).
VERIFIABLE_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
CommaList = Annotated[list[str], NoDecode]


def default_replica_id() -> str:
    """This machine's host name (a container's, under an orchestrator), in the characters MCP_REPLICA_ID
    allows."""
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname()).strip("-._:")[:64]
    return name or "replica"


class SettingsError(Exception):
    """The configuration cannot be used; the message names the setting and the fix."""


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def valid_rate_limit(value: str) -> str:
    """`value` if it is a rate limit that lets calls through (`100/minute`, `10/second;1000/day`)."""
    from limits import parse_many

    try:
        items = parse_many(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit; write e.g. 100/minute") from None
    if any(item.amount < 1 for item in items):
        raise ValueError(f"{value!r} allows no call at all; write at least 1 per period, e.g. 100/minute")
    return value


class Settings(ToolSettings, SampleSettings, BaseSettings):
    """The template's settings, plus the selected samples' (samples/settings.py) and your own fields from
    tool_settings.py (which updates never touch)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        hide_input_in_errors=True,
        env_ignore_empty=True,  # an empty line in .env means "use the default"
    )

    transport: Literal["stdio", "http"] = answers.TRANSPORTS[0]
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"  # any case

    # Credentials: raw keys or sha256:<hex> digests, comma-separated (several at once to rotate).
    api_keys: SecretStr = SecretStr("")
    admin_api_keys: SecretStr = SecretStr("")

    # OAuth 2.1 resource-server mode
    oauth_issuer: str = ""
    oauth_audience: str = ""
    oauth_jwks_url: str = ""
    oauth_required_scopes: CommaList = Field(default_factory=list)
    oauth_algorithms: CommaList = Field(default_factory=lambda: ["RS256", "ES256", "PS256", "EdDSA"])
    # RFC 9068 access tokens say `typ: at+jwt`; false accepts other JWTs (providers that do not set it).
    oauth_require_at_jwt: bool = True
    # A token without `aud` is refused unless this is true (some Keycloak flows omit it).
    oauth_allow_missing_audience: bool = False
    # RFC 7662 introspection for opaque tokens, with this server's own client credentials.
    oauth_introspection_url: str = ""
    oauth_client_id: str = ""
    oauth_client_secret: SecretStr = SecretStr("")
    oauth_introspection_cache_seconds: int = Field(default=60, ge=0, le=300)
    # The token claim that lists the caller's groups (Cedar policies read them as principal.groups).
    oauth_groups_claim: str = Field(default="groups", min_length=1, max_length=100)
    resource_url: str = ""

    # The HTTP perimeter
    trusted_origins: CommaList = Field(default_factory=list)
    allowed_hosts: CommaList = Field(default_factory=list)
    trusted_proxies: CommaList = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_client_ca: Path | None = None
    # Connections (below HTTP): caps, and deadlines for a request's headers and body (slowloris)
    max_connections: int = Field(default=1_000, ge=1, le=1_000_000)
    max_connections_per_address: int = Field(default=100, ge=1, le=100_000)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3_600)

    # Abuse resistance
    rate_limit: str = "100/minute"
    rate_limit_storage: str = "memory://"
    tool_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_result_chars: int = Field(default=100_000, ge=1_000, le=10_000_000)
    # Images, audio and file blobs in one result, decoded; a larger result is refused, never cut.
    max_binary_bytes: int = Field(default=1_048_576, ge=1_024, le=64 * 1_048_576)
    max_calls_in_flight: int = Field(default=8, ge=1, le=1_000)
    # Sessions for initialize-era HTTP clients (consent needs a back channel); off: stateless for all.
    sessions: bool = True
    max_sessions: int = Field(default=1_000, ge=1)
    max_sessions_per_principal: int = Field(default=10, ge=1)
    session_idle_timeout_seconds: float = Field(default=1_800.0, gt=0)
    session_max_streams: int = Field(default=10, ge=1, le=100)
    session_stream_idle_seconds: float = Field(default=300.0, gt=0, le=86_400)
    session_replay_bytes: int = Field(default=262_144, ge=0, le=16_777_216)  # 0: no replay
    # Keys that seal 2026-07-28 requestState (consent retries): every replica needs the same ones.
    # Comma-separated, the first seals, all unseal (rotation); empty: a per-process key.
    request_state_keys: SecretStr = SecretStr("")
    request_state_ttl_seconds: float = Field(default=600.0, gt=0, le=86_400)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=3_600)
    # Tasks (2026-07-28 clients that declare io.modelcontextprotocol/tasks; tools with task=...):
    # memory:// (default, this process only), sqlite:///path (survives a restart), redis://host:port/db
    # (shared by replicas). Live tasks per principal and in all; kept this long
    # after they end; the poll interval advertised (polling sooner counts against the rate limit).
    tasks_url: str = "memory://"
    max_tasks_per_principal: int = Field(default=10, ge=1, le=10_000)
    max_tasks: int = Field(default=1_000, ge=1, le=1_000_000)
    task_ttl_seconds: float = Field(default=3_600.0, gt=0, le=7 * 86_400)
    task_poll_interval_ms: int = Field(default=1_000, ge=100, le=60_000)

    # Cedar policies (policies/*.cedar); no policy file there: the check is off.
    policies_dir: Path = Path("policies")

    # Audit trail: memory://, sqlite:///path, redis://host:port/db. Empty: sqlite for HTTP, memory for stdio.
    security_events_url: str = ""
    # Keys the digests of sensitive arguments in the audit trail (>= 32 bytes; every replica the same one).
    # Empty: derived from the first MCP_REQUEST_STATE_KEYS key, else a key per process.
    audit_digest_key: SecretStr = SecretStr("")
    security_events_retention_days: int = Field(default=90, ge=1)
    # Named in every event (details.replica), so a trail several replicas write tells them apart.
    replica_id: str = Field(default_factory=default_replica_id, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
    security_events_max_rows: int = Field(default=1_000_000, ge=1_000)
    security_events_max_anonymous_rows: int = Field(default=100_000, ge=1_000)
    security_events_per_source: str = "60/minute"
    auth_failure_threshold: int = Field(default=10, ge=1)
    auth_failure_window_seconds: int = Field(default=60, ge=1)
    auth_block_seconds: int = Field(default=300, ge=1)

    # Operations: metrics, alerts, anomaly detection (README: "Operating it")
    metrics_enabled: bool = True
    # Tracing (OTEL_*): join the trace a client names in `_meta.traceparent` only if the clients are yours.
    trust_client_trace_context: bool = False
    alert_webhook_url: SecretStr = SecretStr("")  # often carries a token in its path: kept secret
    alert_webhook_secret: SecretStr = SecretStr("")  # signs each alert (security/audit/alerts.py)
    alert_min_severity: Literal["low", "medium", "high", "critical"] = "high"
    alert_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    anomaly_detection: bool = True
    anomaly_window_seconds: int = Field(default=60, ge=1, le=3_600)
    anomaly_baseline_windows: int = Field(default=10, ge=3, le=1_000)
    anomaly_rate_factor: float = Field(default=5.0, ge=1.5, le=1_000)
    anomaly_min_calls: int = Field(default=30, ge=1)
    anomaly_refusal_threshold: int = Field(default=20, ge=2)
    anomaly_max_principals: int = Field(default=10_000, ge=10, le=1_000_000)

    # Where the notes and records samples keep their databases, and HTTP its default audit trail
    data_dir: Path = Path("data")

    _split = field_validator(
        "oauth_required_scopes",
        "oauth_algorithms",
        "trusted_origins",
        "allowed_hosts",
        "trusted_proxies",
        mode="before",
    )(_split_commas)

    @field_validator("trusted_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if "*" in origin:
                raise ValueError(
                    "wildcard origins are not allowed; list each exact origin (https://app.example.com)"
                )
            if not origin.startswith(("https://", "http://")) or origin.count("/") != 2:
                raise ValueError(f"{origin!r} is not an origin; write scheme://host[:port] with no path")
        return [origin.rstrip("/") for origin in origins]

    @field_validator("oauth_algorithms")
    @classmethod
    def _asymmetric_only(cls, algorithms: list[str]) -> list[str]:
        refused = [alg for alg in algorithms if alg.lower() == "none" or alg.upper().startswith("HS")]
        if refused:
            raise ValueError(
                f"{', '.join(refused)} cannot verify tokens from a public JWKS; use RS256, ES256, ..."
            )
        unknown = [alg for alg in algorithms if alg not in VERIFIABLE_ALGORITHMS]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not a JWS algorithm this server can verify; "
                f"use some of {', '.join(VERIFIABLE_ALGORITHMS)}"
            )
        return algorithms

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    _rate_limits = field_validator("rate_limit", "security_events_per_source")(valid_rate_limit)

    @field_validator("rate_limit_storage")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError("use memory:// or redis://host:port/db")
        return value

    @field_validator("security_events_url")
    @classmethod
    def _known_event_store(cls, value: str) -> str:
        if value and not value.startswith(("memory://", "sqlite:///", "redis://", "rediss://")):
            raise ValueError("use memory://, sqlite:///path/events.db or redis://host:port/db")
        return value

    @field_validator("tasks_url")
    @classmethod
    def _known_task_store(cls, value: str) -> str:
        if not value.startswith(("memory://", "sqlite:///", "redis://", "rediss://")):
            raise ValueError("use memory://, sqlite:///path/tasks.db or redis://host:port/db")
        return value

    @field_validator("request_state_keys", "audit_digest_key", "alert_webhook_secret")
    @classmethod
    def _long_keys(cls, value: SecretStr) -> SecretStr:
        for index, key in enumerate(_split_commas(value.get_secret_value())):
            if len(key.encode()) < 32:
                raise ValueError(
                    f"key {index + 1} is shorter than 32 bytes; make one with "
                    'python -c "import secrets; print(secrets.token_hex(32))"'
                )
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_is_safe(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not _secure_url(url):
            # Fail closed like the OAuth URLs: alerts carry events, and plain HTTP can be read on the way.
            raise ValueError(
                "use an https:// URL with no user:password@ (plain http only to 127.0.0.1, ::1 or localhost)"
            )
        return value

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("MCP_TLS_CERTFILE and MCP_TLS_KEYFILE must be set together")
        if self.tls_client_ca is not None and self.tls_certfile is None:
            raise ValueError("MCP_TLS_CLIENT_CA (mutual TLS) needs MCP_TLS_CERTFILE and MCP_TLS_KEYFILE")
        return self

    @property
    def events_url(self) -> str:
        if self.security_events_url:
            return self.security_events_url
        if self.transport == "http":
            return f"sqlite:///{self.data_dir / 'security-events.db'}"
        return "memory://"

    @property
    def tls_enabled(self) -> bool:
        return self.tls_certfile is not None

    @property
    def audience(self) -> str:
        return self.oauth_audience or self.resource_url

    @property
    def request_state_key_list(self) -> list[str]:
        keys: list[str] = _split_commas(self.request_state_keys.get_secret_value())
        return keys


def _secure_url(url: str) -> bool:
    """https://, or http:// to a loopback host (a local receiver); no user:password@ before the host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host or "@" in parts.netloc:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and host in ("127.0.0.1", "localhost", "::1"))


# Settings a template update renamed: old name -> new name. `copier update` renames them in .env and
# .env.example (the template's hooks/migrate_settings.py); anywhere else (an orchestrator, a compose
# file, a stdio client's `env`) the old name would be silently ignored, so it is refused, naming the new one.
RETIRED_NAMES = {"MCP_AUDIT_URL": "MCP_SECURITY_EVENTS_URL"}


def _field_of(name: str) -> str:
    return name.upper().removeprefix(ENV_PREFIX).lower()


def _renamed(name: str, where: str) -> str:
    return f"{name} was renamed {RETIRED_NAMES[name]}: {where}"


# How alike (difflib's ratio) an unknown MCP_* name in the environment must be to one of ours to be taken
# for a misspelling of it. Clients' own variables (MCP_TIMEOUT, MCP_TOOL_TIMEOUT, ...) stay below it.
MISSPELLING_CUTOFF = 0.85


def misspelled_variables(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, the setting it resembles) for each unknown MCP_* variable that looks like a misspelling."""
    known = sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields)
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known and not absent_sample(upper):
            close = difflib.get_close_matches(upper, known, n=1, cutoff=MISSPELLING_CUTOFF)
            if close:
                found.append((name, close[0]))
    return found


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read settings, refusing invalid values, any unknown MCP_* name in .env, and an unknown MCP_* variable
    in the environment that is a retired name or looks like a misspelling of a setting; other programs'
    MCP_* are ignored."""
    for name in sorted(os.environ):
        if name.upper() in RETIRED_NAMES and _field_of(name) not in Settings.model_fields:
            raise SettingsError(_renamed(name.upper(), "rename it where it is set (the environment)"))
    for name, setting in misspelled_variables(os.environ):
        raise SettingsError(f"unknown setting {name}: did you mean {setting}? (see .env.example)")
    unreadable = env_file_problems(Path(env_file)) if env_file is not None else []
    if unreadable:
        raise SettingsError(".env cannot be read as it stands:\n  " + "\n  ".join(unreadable))
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]).upper()
            variable = (
                (field if field.startswith(ENV_PREFIX) else ENV_PREFIX + field) if field else "settings"
            )
            message = error["msg"].removeprefix("Value error, ")
            sample = absent_sample(variable)
            if error["type"] == "extra_forbidden" and variable in RETIRED_NAMES:
                problems.append(_renamed(variable, "rename it in .env (copier update's migration does)"))
                continue
            if error["type"] == "extra_forbidden" and sample:
                message = f"a setting of the {sample} sample, which this project does not have; remove it"
            elif error["type"] == "extra_forbidden":
                known = [ENV_PREFIX + name.upper() for name in Settings.model_fields]
                close = difflib.get_close_matches(variable, known, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                message = f"unknown setting in .env; {hint}remove it or see .env.example"
            problems.append(f"{variable}: {message}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from None
