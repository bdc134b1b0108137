"""Command line: serve | keygen | check."""

from __future__ import annotations

import argparse
import gc
import importlib
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import profile

# The rest of the package (and the SDK) is imported in main, with the cycle collector paused.
if TYPE_CHECKING:
    from .settings import Settings

LOCK_FILE = Path("tools.lock.json")  # the tool manifest lock (security/manifest.py)
_LOCK_FIX = f"`{profile.COMMAND} check --update-lock`"  # ends every lock error, so _check can tell them apart


def _serve(args: argparse.Namespace) -> int:
    from .settings import SettingsError, load_settings

    overrides = {
        k: v for k, v in (("transport", args.transport), ("host", args.host), ("port", args.port)) if v
    }
    settings = load_settings(**overrides)
    if settings.transport not in profile.TRANSPORTS:
        raise SettingsError(
            f"this project was generated without {settings.transport}; use {profile.TRANSPORTS}"
        )
    if settings.transport == "http":
        importlib.import_module(f"{__package__}.app").serve_http(settings)
        return 0
    from .server import build_server, freeze_startup_objects

    server = build_server(settings)
    freeze_startup_objects()
    server.run("stdio")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from .security.keys import digest_of, new_key

    if args.write_env:
        return _write_env(Path(".env"))
    key = new_key()
    variable = "MCP_ADMIN_API_KEYS" if args.admin else "MCP_API_KEYS"
    print(f"key:    {key}")
    print(f"digest: {digest_of(key)}")
    print(f"Give the key to the client; put the digest (or the key) in {variable} in .env.")
    return 0


def _write_env(path: Path) -> int:
    from .security.keys import new_key

    if path.exists():
        print(f"{path} exists; not overwriting it. Use `{profile.COMMAND} keygen` to make one more key.")
        return 1
    tool_key, admin_key = new_key(), new_key()
    lines = [
        "# Made by keygen. Never commit this file.",
        f"MCP_API_KEYS={tool_key}",
        f"MCP_ADMIN_API_KEYS={admin_key}",
        "",
    ]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines))
    print(f"Wrote {path} (mode 600) with a tool key and an admin key.")
    return 0


def security_report(settings: Settings, lock: Path = LOCK_FILE) -> tuple[list[str], list[str], list[str]]:
    """(errors, warnings, facts) about the configuration and the tools; errors stop `serve`."""
    from .security.manifest import differences, manifest, read_lock

    errors: list[str] = []
    warnings: list[str] = []
    facts = [f"transport: {settings.transport}", f"audit trail: {settings.events_url.split('://')[0]}"]
    if settings.transport == "http":
        credentials = importlib.import_module(f"{__package__}.security.perimeter.credentials")
        errors.extend(credentials.credential_problems(settings))
        facts.append(f"authentication: {credentials.SCHEME}")
        facts.append(
            f"bind: {settings.host}:{settings.port} ({'TLS' if settings.tls_enabled else 'plain HTTP'})"
        )
        if not _is_loopback(settings.host) and not settings.tls_enabled:
            warnings.append(
                f"MCP_HOST={settings.host} is reachable from other machines over plain HTTP: keys and tokens "
                "can be read on the network. Set MCP_TLS_CERTFILE/MCP_TLS_KEYFILE, or terminate TLS at a "
                "proxy listed in MCP_TRUSTED_PROXIES."
            )
        errors.extend(importlib.import_module(f"{__package__}.security.perimeter.tls").tls_problems(settings))
        if settings.tls_client_ca is not None:
            facts.append("mutual TLS: clients need a certificate signed by MCP_TLS_CLIENT_CA")
        origin = importlib.import_module(f"{__package__}.security.perimeter.origin")
        hosts = settings.allowed_hosts or origin.default_allowed_hosts(settings.host, settings.port)
        facts.append(f"allowed Host headers: {', '.join(hosts)}")
        if not _is_loopback(settings.host) and not settings.allowed_hosts:
            warnings.append(
                f"MCP_ALLOWED_HOSTS is empty, so only requests addressed to {', '.join(hosts)} are "
                "accepted (others get 421, the DNS-rebinding defence). List the names clients use in "
                "MCP_ALLOWED_HOSTS."
            )
        facts.append(f"trusted origins: {', '.join(settings.trusted_origins) or 'none (no browser access)'}")
        if "*" in settings.trusted_proxies:
            warnings.append(
                "MCP_TRUSTED_PROXIES contains *: any client can forge X-Forwarded-For and so its address in "
                "events and rate limits. List the proxies' addresses instead."
            )
        proxies = ", ".join(settings.trusted_proxies) or "nobody (the socket address counts)"
        facts.append(f"X-Forwarded-For honoured from: {proxies}")
        facts.append(f"rate limit: {settings.rate_limit} ({settings.rate_limit_storage.split('://')[0]})")
    try:
        from .server import build_guard
        from .services import open_services

        guard = build_guard(settings, open_services(settings))
    except Exception as exc:  # noqa: BLE001 - report every start-up failure, with its own message
        errors.append(str(exc))
        return errors, warnings, facts
    try:
        problems = differences(read_lock(lock), manifest(guard))
    except ValueError as exc:
        problems = [str(exc)]
    errors.extend(f"{problem}; review the change, then run {_LOCK_FIX}" for problem in problems)
    facts.append(f"tools: {len(guard.policies)} ({'match' if not problems else 'differ from'} {lock})")
    return errors, warnings, facts


def _update_lock(settings: Settings, lock: Path) -> int:
    from .security.manifest import differences, manifest, read_lock, render_lock
    from .server import build_guard
    from .services import open_services

    served = manifest(build_guard(settings, open_services(settings)))
    try:
        changes = differences(read_lock(lock), served)
    except ValueError:
        changes = [f"new lock with {len(served)} tools"]
    lock.write_text(render_lock(served), encoding="utf-8")
    for change in changes:
        print(f"  {change}")
    print(f"Wrote {lock} ({len(served)} tools). Review `git diff {lock}` and commit it.")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(args: argparse.Namespace) -> int:
    from .settings import load_settings

    overrides = {"transport": args.transport} if args.transport else {}
    settings = load_settings(**overrides)
    if args.update_lock:
        return _update_lock(settings, args.lock)
    errors, warnings, facts = security_report(settings, args.lock)
    print(f"{profile.PROJECT_NAME}: security report")
    for fact in facts:
        print(f"  ok       {fact}")
    for warning in warnings:
        print(f"  WARNING  {warning}")
    for error in errors:
        print(f"  ERROR    {error}")
    print(_verdict(errors, args.lock))
    return 1 if errors else 0


def _verdict(errors: list[str], lock: Path) -> str:
    """The last line of the report: what `serve` will do with these errors."""
    if not errors:
        return "configuration is valid"
    if all(error.endswith(_LOCK_FIX) for error in errors):
        # serve does not read the lock (see README): the gate is check and the test suite, in CI.
        return (
            f"{len(errors)} error(s): the tools differ from {lock}. `serve` still starts and serves the "
            f"tools as they are now; check and the project's tests fail until you run {_LOCK_FIX}"
        )
    return f"{len(errors)} error(s): the server will not start"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=profile.COMMAND, description=profile.PROJECT_NAME)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the MCP server")
    serve.add_argument("--transport", choices=profile.TRANSPORTS)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=_serve)
    keygen = commands.add_parser("keygen", help="print a new random key and the digest to store")
    keygen.add_argument("--admin", action="store_true", help="a key for MCP_ADMIN_API_KEYS")
    keygen.add_argument(
        "--write-env", action="store_true", help="create .env with a tool key and an admin key"
    )
    keygen.set_defaults(handler=_keygen)
    check = commands.add_parser("check", help="validate the configuration and print a security report")
    check.add_argument("--transport", choices=profile.TRANSPORTS)
    check.add_argument(
        "--lock", type=Path, default=LOCK_FILE, help="the tool manifest lock (tools.lock.json)"
    )
    check.add_argument(
        "--update-lock", action="store_true", help="record the served tools in the lock after reviewing them"
    )
    check.set_defaults(handler=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up builds a few hundred thousand objects that live as long as the process (the SDK's and
    # our validators); the cycle collector walked them again and again while they were built, a tenth
    # of the time to start. Paused until `serve` has built its server (freeze_startup_objects).
    gc.disable()
    try:
        from .security.events import EventStoreConfigError
        from .settings import SettingsError

        args = build_parser().parse_args(argv)
        try:
            result: int = args.handler(args)
        except (SettingsError, EventStoreConfigError) as exc:
            print(f"{profile.COMMAND}: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            # Ctrl-C: the server has shut down cleanly and the signal is re-raised; no traceback for that.
            return 130
        return result
    finally:
        gc.enable()
