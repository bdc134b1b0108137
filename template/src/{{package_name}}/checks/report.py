"""The security report `check` prints: errors (the server will not start), warnings and facts."""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import answers
from ..security.toolkit.private import database_problem
from .keys_report import key_counts, key_holders, key_reach, unnamed_keys
from .upgrade import upgrade_warnings

if TYPE_CHECKING:
    from ..settings import Settings

PACKAGE = __name__.rsplit(".", 2)[0]  # the project's package: this module is <package>.checks.report
LOCK_FIX = f"`{answers.COMMAND} check --update-lock`"  # ends every lock error: verdict tells them apart


@dataclass
class Findings:
    """What `check` found: errors stop `serve`, warnings do not, facts say what is configured."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)


def print_report(settings: Settings, lock: Path, *, offline: bool = False) -> int:
    """Print the report (configuration, tools, the project's files) and return check's exit status."""
    errors, warnings, facts = security_report(settings, lock, offline=offline)
    # The project's files (.env's mode, update conflicts, stale keys): `serve` does not look at them.
    from .project_files import project_problems

    file_errors, file_warnings = project_problems(settings)
    warnings += file_warnings
    print(f"{answers.PROJECT_NAME}: security report")
    for fact in facts:
        print(f"  ok       {fact}")
    for warning in warnings:
        print(f"  WARNING  {warning}")
    for error in file_errors + errors:
        print(f"  ERROR    {error}")
    print(verdict(errors, lock, offline=offline, file_errors=file_errors))
    return 1 if errors or file_errors else 0


def security_report(
    settings: Settings, lock: Path, *, offline: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """(errors, warnings, facts) about the configuration and the tools; errors stop `serve`.

    `offline` contacts no other server (authorization server, Redis) and says so in the facts.
    """
    found = Findings(facts=[f"transport: {settings.transport}"])
    found.warnings.extend(upgrade_warnings())
    _audit_store_report(settings, found, offline=offline)
    if settings.transport == "http":
        _credentials_report(settings, found, offline=offline)
        _network_report(settings, found)
        _shared_state_report(settings, found, offline=offline)
    _tasks_report(settings, found)
    _tools_report(settings, lock, found, offline=offline)
    return found.errors, found.warnings, found.facts


def _tasks_report(settings: Settings, found: Findings) -> None:
    """Where tasks live (the tasks extension) and their limits."""
    url = settings.tasks_url
    if url.startswith("sqlite:///"):
        where = f"SQLite file {url.removeprefix('sqlite:///')} (survives a restart)"
    elif url.startswith(("redis://", "rediss://")):
        host = urlsplit(url)
        where = f"Redis at {host.hostname}:{host.port or 6379}{host.path or '/0'} (shared by replicas)"
    else:
        where = "memory (this process; lost when it stops)"
    found.facts.append(
        f"tasks: {where}; at most {settings.max_tasks_per_principal} live per principal and "
        f"{settings.max_tasks} in all, kept {settings.task_ttl_seconds:g}s after they end, "
        f"polled every {settings.task_poll_interval_ms} ms"
    )


def _credentials_report(settings: Settings, found: Findings, *, offline: bool) -> None:
    """HTTP: the credentials' settings, the authorization server's agreement (OAuth), who holds a key."""
    credentials = importlib.import_module(f"{PACKAGE}.security.perimeter.credentials")
    found.errors.extend(credentials.credential_problems(settings))
    found.facts.append(f"authentication: {credentials.SCHEME}")
    if credentials.SCHEME == "oauth" and offline:
        found.facts.append(
            f"authorization server: not asked (--offline): {settings.oauth_issuer}'s metadata and keys "
            "were not compared with the settings; run `check` where the issuer is reachable"
        )
    else:
        found.errors.extend(credentials.authorization_problems(settings))  # OAuth: asks the issuer
    found.facts.append(key_counts(settings, credentials.SCHEME))
    found.facts.extend(key_holders(settings, tool_keys=credentials.SCHEME == "api_key"))
    found.warnings.extend(unnamed_keys(settings, tool_keys=credentials.SCHEME == "api_key"))


def _network_report(settings: Settings, found: Findings) -> None:
    """HTTP: the address, TLS, the Host headers, origins and proxies the server trusts."""
    found.facts.append(
        f"bind: {settings.host}:{settings.port} ({'TLS' if settings.tls_enabled else 'plain HTTP'})"
    )
    if not _is_loopback(settings.host) and not settings.tls_enabled:
        found.warnings.append(
            f"MCP_HOST={settings.host} is reachable from other machines over plain HTTP: keys and tokens "
            "can be read on the network. Set MCP_TLS_CERTFILE/MCP_TLS_KEYFILE, or terminate TLS at a "
            "proxy listed in MCP_TRUSTED_PROXIES."
        )
    found.errors.extend(importlib.import_module(f"{PACKAGE}.security.perimeter.tls").tls_problems(settings))
    if settings.tls_client_ca is not None:
        found.facts.append("mutual TLS: clients need a certificate signed by MCP_TLS_CLIENT_CA")
    origin = importlib.import_module(f"{PACKAGE}.security.perimeter.origin")
    hosts = settings.allowed_hosts or origin.default_allowed_hosts(settings.host, settings.port)
    found.facts.append(f"allowed Host headers: {', '.join(hosts)}")
    if not _is_loopback(settings.host) and not settings.allowed_hosts:
        found.warnings.append(
            f"MCP_ALLOWED_HOSTS is empty, so only requests addressed to {', '.join(hosts)} are "
            "accepted (others get 421, the DNS-rebinding defence). List the names clients use in "
            "MCP_ALLOWED_HOSTS."
        )
    found.facts.append(
        f"trusted origins: {', '.join(settings.trusted_origins) or 'none (no browser access)'}"
    )
    if "*" in settings.trusted_proxies:
        found.warnings.append(
            "MCP_TRUSTED_PROXIES contains *: any client can forge X-Forwarded-For and so its address in "
            "events and rate limits. List the proxies' addresses instead."
        )
    proxies = ", ".join(settings.trusted_proxies) or "nobody (the socket address counts)"
    found.facts.append(f"X-Forwarded-For honoured from: {proxies}")


def _shared_state_report(settings: Settings, found: Findings, *, offline: bool) -> None:
    """HTTP: where the rate limits count, what replicas must share, sessions."""
    limiter = settings.rate_limit_storage.split("://")[0]
    not_asked = " (not contacted: --offline)" if offline and limiter != "memory" else ""
    found.facts.append(f"rate limit: {settings.rate_limit} ({limiter}){not_asked}")
    shared = [url for url in (settings.rate_limit_storage, settings.events_url) if url.startswith("redis")]
    if shared and not settings.request_state_key_list:
        found.warnings.append(
            "Redis stores suggest several replicas, but MCP_REQUEST_STATE_KEYS is empty: a consent "
            "retry that reaches another replica is refused. Give every replica the same key "
            '(python -c "import secrets; print(secrets.token_hex(32))").'
        )
    if shared and not settings.tasks_url.startswith(("redis://", "rediss://")):
        found.warnings.append(
            "Redis stores suggest several replicas, but MCP_TASKS_URL is not Redis: a task created on one "
            "replica is unknown to the others. Set MCP_TASKS_URL to the same redis:// URL on every replica."
        )
    sessions = "off (stateless for every client)"
    if settings.sessions:
        sessions = (
            f"on for initialize-era clients (at most {settings.max_sessions}, "
            f"{settings.max_sessions_per_principal} per principal; route replicas by Mcp-Session-Id)"
        )
    found.facts.append(f"sessions: {sessions}")


def _tools_report(settings: Settings, lock: Path, found: Findings, *, offline: bool) -> None:
    """The tools as `serve` would build them, compared with the lock; the sandbox; operations."""
    from ..security.manifest import compare, count, read_lock, served

    try:
        from ..server.build import build_guard
        from ..server.services import open_services

        with scratch_settings(settings, offline=offline) as scratch:
            guard = build_guard(scratch, open_services(scratch))
    except Exception as exc:  # noqa: BLE001 - report every start-up failure, with its own message
        found.errors.append(str(exc))
        return
    current = served(guard)
    from .policies import policy_report

    policy_errors, policy_facts = policy_report(guard.policies_enforced, settings)
    found.errors.extend(policy_errors)
    found.facts.extend(policy_facts)
    if settings.transport == "http" and answers.AUTH_MODE == "api_key":
        found.facts.extend(key_reach(settings, guard))
    if "sandbox" in answers.SAMPLE_TOOLS:
        _sandbox_report(settings, found)
    try:
        problems = compare(read_lock(lock), current)
    except ValueError as exc:
        problems = [str(exc)]
    found.errors.extend(f"{problem}; review the change, then run {LOCK_FIX}" for problem in problems)
    found.facts.append(f"served: {count(current)} ({'match' if not problems else 'differ from'} {lock})")
    found.facts.extend(
        importlib.import_module(f"{PACKAGE}.server.observability").operations_facts(settings, os.environ)
    )


@contextlib.contextmanager
def scratch_settings(settings: Settings, *, offline: bool = False) -> Iterator[Settings]:
    """The same settings writing nowhere real, so that `check` builds every tool and creates no file.

    The tools' data go to a temporary directory, the audit store is checked on its own
    (_audit_store_report); an existing files root is used as it is, since the file tools only read it.
    Offline, the rate limits count in memory, so that no Redis is contacted.
    """
    with tempfile.TemporaryDirectory(prefix="check-") as scratch:
        update: dict[str, object] = {"data_dir": Path(scratch, "data"), "security_events_url": "memory://"}
        if offline:
            update["rate_limit_storage"] = "memory://"
        files_root = getattr(settings, "files_root", None)  # the files sample's (samples/settings.py)
        if files_root is not None and not files_root.exists():
            update["files_root"] = Path(scratch, "files")
        yield settings.model_copy(update=update)


def _audit_store_report(settings: Settings, found: Findings, *, offline: bool) -> None:
    """Where the audit trail goes, and whether it can be written there, without creating anything."""
    url = settings.events_url
    if url.startswith("memory://"):
        found.facts.append("audit trail: memory (lost when the server stops)")
    elif url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        where = f"audit trail: SQLite file {path}" + ("" if path.is_absolute() else f" (in {Path.cwd()})")
        existing = next(parent for parent in (path, *path.absolute().parents) if parent.exists())
        problem = database_problem(path)
        if problem is not None:
            found.errors.append(f"MCP_SECURITY_EVENTS_URL: {problem}")
        elif not os.access(existing, os.W_OK) or (existing != path and not existing.is_dir()):
            found.errors.append(
                f"MCP_SECURITY_EVENTS_URL: {existing} is not writable; point it at a writable path"
            )
        found.facts.append(where + ("" if existing == path else ", created at first start"))
        if path.is_file():
            _chain_report(url, found)
    else:
        from ..security.audit.events import open_event_store

        if not offline:
            try:
                open_event_store(url)  # a Redis store answers PING here or raises with the fix
            except ValueError as exc:
                found.errors.append(str(exc))
        host = urlsplit(url)
        found.facts.append(
            f"audit trail: Redis at {host.hostname}:{host.port or 6379}{host.path or '/0'}"
            + (" (not contacted: --offline)" if offline else "")
        )
        if not offline and not found.errors:
            _chain_report(url, found)


CHAIN_LOOK = 1_000  # the newest links `check` verifies; `audit verify` walks them all


def _chain_report(url: str, found: Findings) -> None:
    """The audit chains' state, and whether their newest links hold (a quick look, not a full walk; a
    SQLite file as of its last checkpoint, since check changes no file)."""
    from ..security.audit.verify import VerifyError, verify

    try:
        reports, problem = verify(url, tail=CHAIN_LOOK, untouched=True)
    except VerifyError as exc:
        found.warnings.append(f"audit chain: {exc}")
        return
    for report in reports:
        found.facts.append(f"audit {report.summary()}")
    if problem:
        found.warnings.append(
            f"audit chain broken in its newest {CHAIN_LOOK:,} events: {problem}; "
            f"`{answers.COMMAND} audit verify` walks the whole trail"
        )
    else:
        found.facts.append(
            f"audit chain: the newest {CHAIN_LOOK:,} links of each hold "
            f"(`{answers.COMMAND} audit verify` walks the whole trail)"
        )


def _sandbox_report(settings: Settings, found: Findings) -> None:
    sandbox = importlib.import_module(f"{PACKAGE}.security.toolkit.sandbox")
    box = sandbox.Sandbox(sandbox.Limits(), getattr(settings, "sandbox_python", ""))
    try:
        box.probe()
    except sandbox.SandboxUnavailableError as exc:
        found.warnings.append(
            f"run_python is disabled (it refuses every call): {exc} (interpreter: {box.python})"
        )
    else:
        found.facts.append(f"sandbox: available (bubblewrap, {box.python})")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def verdict(errors: list[str], lock: Path, *, offline: bool = False, file_errors: Sequence[str] = ()) -> str:
    """The last line of the report: what `serve` will do with these errors."""
    if not errors and file_errors:
        return (
            f"{len(file_errors)} error(s) in the project's files: `serve` still starts; check (and CI) "
            "fail until they are fixed"
        )
    if not errors and offline:
        return "configuration is valid offline (no other server was contacted; see the facts above)"
    if not errors:
        return "configuration is valid"
    if all(error.endswith(LOCK_FIX) for error in errors):
        # serve does not read the lock (see README): the gate is check and the test suite, in CI.
        return (
            f"{len(errors)} error(s): the tools differ from {lock}. `serve` still starts and serves the "
            f"tools as they are now; check and the project's tests fail until you run {LOCK_FIX}"
        )
    return f"{len(errors)} error(s): the server will not start"
