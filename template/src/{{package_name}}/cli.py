"""Command line: serve | dev | check | keygen | keys | install | policy | audit verify | audit digest
(| dev-auth, in OAuth projects)."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import answers

# The rest of the package (and the SDK) is imported in main, with the cycle collector paused.
if TYPE_CHECKING:
    from .settings import Settings

LOCK_FILE = Path("tools.lock.json")  # the tool manifest lock (security/manifest.py)


_debug = False  # MCP_LOG_LEVEL=DEBUG: start-up errors show their traceback


def _load(**overrides: Any) -> Settings:
    """Settings for serve and check; a transport this project was not generated with is refused."""
    global _debug
    from .settings import SettingsError, load_settings

    settings = load_settings(**overrides)
    _debug = settings.log_level == "DEBUG"
    if settings.transport not in answers.TRANSPORTS:
        raise SettingsError(
            f"MCP_TRANSPORT={settings.transport}: this project was generated for "
            f"{' and '.join(answers.TRANSPORTS)} only; set MCP_TRANSPORT={answers.TRANSPORTS[0]} "
            "(or regenerate it with transport=both)"
        )
    return settings


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        k: v for k, v in (("transport", args.transport), ("host", args.host), ("port", args.port)) if v
    }
    settings = _load(**overrides)
    from .server.logs import configure_logging

    configure_logging(settings.log_level)
    if settings.transport == "http":
        importlib.import_module(f"{__package__}.transport.http.app").serve_http(settings, os.environ)
        return 0
    from .server.build import build_server, freeze_startup_objects
    from .server.observability import configure_tracing, served_names

    server = build_server(settings)
    # The standard OTEL_* variables; off by default.
    configure_tracing(
        os.environ, served_names(server.guard), trust_client_context=settings.trust_client_trace_context
    )
    freeze_startup_objects()
    server.run("stdio")
    server.guard.events.publish_heads()  # the audit chains' heads as the server leaves them (HTTP: app.py)
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from .security.identity.keys import KeyFormatError, entry_line, new_key

    if args.write_env:
        return _write_env(Path(".env"))
    scopes = [scope.strip() for scope in (args.scopes or "").split(",") if scope.strip()]
    groups = [group.strip() for group in (args.groups or "").split(",") if group.strip()]
    if args.admin and (scopes or groups):
        print("admin keys carry no scopes or groups (they read /security/events only)", file=sys.stderr)
        return 2
    key = new_key()
    try:
        line = entry_line(key, args.name, scopes, groups)
    except KeyFormatError as exc:
        print(f"{answers.COMMAND} keygen: {exc}", file=sys.stderr)
        return 2
    variable = "MCP_ADMIN_API_KEYS" if args.admin else "MCP_API_KEYS"
    print(f"key:    {key}")
    print(f"digest: {line}")
    print(f"Give the key to the client; add the digest line to {variable} in .env (entries comma-separated).")
    if args.name:
        print(f"Rotating {args.name}'s key: keep the old line until the client uses the new key.")
    return 0


def _write_env(path: Path) -> int:
    import getpass
    import secrets

    from .security.identity.keys import key_name, new_key

    if path.exists():
        print(f"{path} exists; not overwriting it. Use `{answers.COMMAND} keygen` to make one more key.")
        return 1
    # OAuth clients bring access tokens: no tool key to hand out, only the admin key. The tool key is
    # named after the user, so that rotating it (keygen --name) keeps the caller, and its data, the same.
    oauth = answers.AUTH_MODE == "oauth"
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no USER and no passwd entry (some containers)
        user = ""
    name = key_name(user) or "owner"
    lines = ["# Made by keygen. Never commit this file."]
    lines += [] if oauth else [f"MCP_API_KEYS={name}:{new_key()}"]
    lines += [f"MCP_ADMIN_API_KEYS={new_key()}"]
    if "http" in answers.TRANSPORTS:
        lines.append(f"MCP_REQUEST_STATE_KEYS={secrets.token_hex(32)}")
    lines.append("")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines))
    made = "an admin key" if oauth else f"a tool key named {name} and an admin key"
    print(f"Wrote {path} (mode 600) with {made}.")
    return 0


def _update_lock(settings: Settings, lock: Path, *, offline: bool = False) -> int:
    from .checks.report import scratch_settings
    from .security.manifest import compare, count, read_lock, render_lock, served
    from .server.build import build_guard
    from .server.services import open_services

    with scratch_settings(settings, offline=offline) as scratch:
        current = served(build_guard(scratch, open_services(scratch)))
    try:
        changes = compare(read_lock(lock), current)
    except ValueError:
        changes = [f"new lock with {count(current)}"]
    lock.write_text(render_lock(current), encoding="utf-8")
    for change in changes:
        print(f"  {change}")
    print(f"Wrote {lock} ({count(current)}). Review `git diff {lock}` and commit it.")
    return 0


def _dev_auth(args: argparse.Namespace) -> int:
    # dev_auth.py exists in OAuth projects only, as does this subcommand.
    dev_auth = importlib.import_module(f"{__package__}.dev_auth")
    result: int = dev_auth.run(_load(), args.host, args.port, args.user)
    return result


def _check(args: argparse.Namespace) -> int:
    overrides = {"transport": args.transport} if args.transport else {}
    settings = _load(**overrides)
    if args.update_lock:
        return _update_lock(settings, args.lock, offline=args.offline)
    from .checks.report import print_report

    return print_report(settings, args.lock, offline=args.offline)


def _audit_verify(args: argparse.Namespace) -> int:
    from .security.audit.chain import Head
    from .security.audit.verify import heads_in_log, print_verification

    url = args.store or _load().events_url
    where = url if url.startswith("sqlite:///") else url.split("@")[-1]  # never a Redis password
    try:
        heads = [Head.parse(token) for token in args.head or []]
        heads += heads_in_log(args.log) if args.log else []
        return print_verification(url, where, heads)
    except ValueError as exc:  # VerifyError, or a --head that is not one
        print(f"{answers.COMMAND} audit verify: {exc}", file=sys.stderr)
        return 2


def _audit_parser(commands: Any) -> None:
    audit = commands.add_parser("audit", help="inspect the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="walk the audit trail's hash chain; non-zero if it is broken")
    verify.add_argument(
        "store", nargs="?", help="sqlite:///path or redis://host:port/db (default: MCP_SECURITY_EVENTS_URL)"
    )
    verify.add_argument(
        "--head", action="append", help="a head the server published (chain:position:hash); repeatable"
    )
    verify.add_argument("--log", type=Path, help="a server log: its newest published heads are checked")
    verify.set_defaults(handler=_audit_verify)
    digest = audit.add_parser("digest", help="print the trail's digest of a sensitive value (to search)")
    digest.add_argument("value", nargs="?", help="default: one line from stdin (kept out of shell history)")
    digest.set_defaults(handler=_audit_digest)


def _audit_digest(args: argparse.Namespace) -> int:
    from .security.audit.redact import Redactor
    from .server.services import audit_digest_key

    key = audit_digest_key(_load())
    if key is None:
        print(
            "no digest key: set MCP_AUDIT_DIGEST_KEY (or MCP_REQUEST_STATE_KEYS); without one, each run of "
            "the server digests with a key of its own",
            file=sys.stderr,
        )
        return 2
    value = args.value if args.value is not None else sys.stdin.readline().removesuffix("\n")
    print(Redactor(digest_key=key).digest(value))
    return 0


def _policy(args: argparse.Namespace) -> int:
    """`policy explain | schema | test`: the policies as the server would load them (README: Policies)."""
    import json

    from .checks.policies import explain, policy_report
    from .checks.report import scratch_settings
    from .security.policy.base import PolicyError
    from .security.policy.cases import case_action, principal_named
    from .server.build import build_guard
    from .server.services import open_services

    settings = _load()
    with scratch_settings(settings, offline=True) as scratch:
        policies = build_guard(scratch, open_services(scratch)).policies_enforced
    if policies is None:
        print(
            f"{answers.COMMAND}: no .cedar file in {settings.policies_dir}: policies are off", file=sys.stderr
        )
        return 1
    if args.policy_command == "schema":
        print(policies.model.text)
        return 0
    if args.policy_command == "test":
        errors, facts = policy_report(policies, settings)
        print("\n".join([*facts, *errors]))
        return 1 if errors else 0
    try:
        arguments = json.loads(args.args)
    except ValueError:
        raise PolicyError('--args is a JSON object, e.g. \'{"path": "reports/q3.txt"}\'') from None
    groups, scopes = _held(settings, args.principal)
    principal = principal_named(args.principal, args.groups or groups, scopes, "--as")
    case = {"tool": args.tool, "resource": args.resource, "prompt": args.prompt}
    action, extra = case_action(case, "policy explain")
    print(explain(policies, principal, action, arguments, args.client, extra))
    return 0


def _held(settings: Settings, uid: str) -> tuple[list[str], list[str]]:
    """The groups and scopes MCP_API_KEYS gives the key `key:<name>`, for `policy explain --as`."""
    from .security.identity.keys import KeyFormatError, parse_keys

    try:
        entries = parse_keys(settings.api_keys.get_secret_value(), "MCP_API_KEYS")
    except KeyFormatError:
        return [], []
    for entry in entries:
        if f"key:{entry.principal_id.removeprefix('key:')}" == uid:
            return sorted(entry.groups), sorted(entry.scopes)
    return [], []


def _policy_parser(commands: Any) -> None:
    policy = commands.add_parser("policy", help="the Cedar policies: explain a decision, print the schema")
    actions = policy.add_subparsers(dest="policy_command", required=True)
    explain = actions.add_parser("explain", help="the decision for one request, and the policies behind it")
    explain.add_argument("--as", dest="principal", required=True, help="key:alice, user:<sub>, client:<id>")
    what = explain.add_mutually_exclusive_group(required=True)
    what.add_argument("--tool")
    what.add_argument("--resource", help="a resource URI")
    what.add_argument("--prompt")
    explain.add_argument("--args", default="{}", help="the arguments, a JSON object")
    explain.add_argument("--groups", type=lambda text: [g for g in text.split(",") if g], default=None)
    explain.add_argument("--client", default="stdio", help="an HTTP client's address (default: stdio)")
    actions.add_parser("schema", help="print the Cedar schema policies are validated against")
    actions.add_parser("test", help="run the cases in policies/tests/")
    policy.set_defaults(handler=_policy)


def _dev_auth_parser(commands: Any) -> None:
    if answers.AUTH_MODE != "oauth":
        return
    dev_auth = commands.add_parser(
        "dev-auth", help="run the development authorization server (loopback only) and print .env lines"
    )
    dev_auth.add_argument("--host", default="127.0.0.1", help="a loopback address")
    dev_auth.add_argument("--port", type=int, default=9400)
    dev_auth.add_argument("--user", default="developer", help="who signs in (a login_hint wins)")
    dev_auth.set_defaults(handler=_dev_auth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=answers.COMMAND, description=answers.PROJECT_NAME)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the MCP server")
    serve.add_argument("--transport", choices=answers.TRANSPORTS)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=_serve)
    keygen = commands.add_parser(
        "keygen",
        help="print a new random key and the digest to store",
        description=(
            "Print a new random key (256 bits) and the sha256: digest to store instead of it. A key of "
            "your own making is refused at start-up and by `check` if it is easy to guess (below about "
            "128 bits, or built from words, dates or sequences)."
        ),
    )
    keygen.add_argument("--admin", action="store_true", help="a key for MCP_ADMIN_API_KEYS")
    keygen.add_argument("--name", help="who holds the key (stays the same when the key is rotated)")
    keygen.add_argument(
        "--scopes", help="comma-separated scopes the key is limited to, e.g. notes:read,notes:write"
    )
    keygen.add_argument("--groups", help="comma-separated groups, read by Cedar policies, e.g. analysts")
    keygen.add_argument(
        "--write-env", action="store_true", help="create .env with a tool key and an admin key"
    )
    keygen.set_defaults(handler=_keygen)
    check = commands.add_parser("check", help="validate the configuration and print a security report")
    check.add_argument("--transport", choices=answers.TRANSPORTS)
    check.add_argument(
        "--lock", type=Path, default=LOCK_FILE, help="the tool manifest lock (tools.lock.json)"
    )
    check.add_argument(
        "--update-lock", action="store_true", help="record the served tools in the lock after reviewing them"
    )
    check.add_argument(
        "--offline",
        action="store_true",
        help="contact no other server (OAuth authorization server, Redis): for CI without them",
    )
    check.set_defaults(handler=_check)
    _policy_parser(commands)
    _audit_parser(commands)
    for command in ("dev", "keys", "install"):
        importlib.import_module(f"{__package__}.commands.{command}").add_parser(commands)
    _dev_auth_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up builds a few hundred thousand objects that live as long as the process (the SDK's and
    # our validators); the cycle collector walked them again and again while they were built, a tenth
    # of the time to start. Paused until `serve` has built its server (freeze_startup_objects).
    gc.disable()
    # What the server writes (audit trail, tool data, their WAL files) is for its own user alone.
    os.umask(0o077)
    try:
        from .security.audit.events import EventStoreConfigError
        from .security.limits import RateLimitConfigError
        from .security.policy.base import PolicyError
        from .settings import SettingsError

        args = build_parser().parse_args(argv)
        try:
            result: int = args.handler(args)
        except (SettingsError, EventStoreConfigError, RateLimitConfigError, PolicyError) as exc:
            print(f"{answers.COMMAND}: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            # Ctrl-C: the server has shut down cleanly and the signal is re-raised; no traceback for that.
            # Another one (pressed twice, or forwarded by `uv run` 200 ms late) would land while the
            # stopped server exits and end it in one: ignored from here on.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return 130
        except Exception as exc:
            # A tool that cannot be registered, a module that does not import: one line, not a traceback.
            if _debug:
                raise
            print(f"{answers.COMMAND}: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
            print("  (MCP_LOG_LEVEL=DEBUG shows the traceback)", file=sys.stderr)
            return 2
        return result
    finally:
        gc.enable()
