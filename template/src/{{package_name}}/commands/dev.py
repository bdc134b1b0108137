"""`dev`: `serve` over HTTP on loopback, restarted when the project's code, policies or .env change.

The restart is the one an ASGI server's --reload does, on the same library (watchfiles): `serve`'s own code
path runs in a child process, stopped (SIGTERM) and started again on a change, so every defence,
connection limit and setting is the one `serve` has. Only two things differ from `serve`: the address
is always loopback, whatever MCP_HOST says, and each start compares the served tools with
tools.lock.json and warns (without stopping: `check` is what fails on it) when they differ.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess  # nosec B404 - fixed argument lists, no shell
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import answers

if TYPE_CHECKING:
    from ..settings import Settings

LOOPBACK = "127.0.0.1"
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"  # the version the template's tests run
LOCK_FILE = Path("tools.lock.json")
PACKAGE = __name__.rsplit(".", 2)[0]  # this module is <package>.commands.dev
# The shell variable the printed commands read the credential from.
API_KEY_MODE = answers.AUTH_MODE == "api_key"
SECRET, WHAT = ("KEY", "a key") if API_KEY_MODE else ("TOKEN", "an access token")


def add_parser(commands: Any) -> None:
    dev = commands.add_parser(
        "dev", help="serve on loopback over HTTP, restarting when code, policies or .env change"
    )
    dev.add_argument("--port", type=int, help="default: MCP_PORT")
    dev.add_argument("--inspector", action="store_true", help="also start the MCP Inspector (needs npx)")
    dev.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the served process
    dev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if "http" not in answers.TRANSPORTS:
        print(
            f"{answers.COMMAND} dev serves over HTTP, and this project was generated for stdio only. Over "
            "stdio the client starts the server itself and loads your code afresh each time: restart "
            "it from the client (the Inspector's Restart button, Claude Code's /mcp) after a change. "
            "For dev, generate the project again with transport=both.",
            file=sys.stderr,
        )
        return 2
    settings = _settings(args.port)
    if args.child:
        return _serve(settings)
    try:
        import watchfiles
    except ImportError:
        print(
            f"{answers.COMMAND} dev needs watchfiles (the dev dependency group): run `uv sync`",
            file=sys.stderr,
        )
        return 2
    scheme = "https" if settings.tls_enabled else "http"
    url = f"{scheme}://{LOOPBACK}:{settings.port}/mcp"
    print(f"{answers.COMMAND} dev: serving {url}; restarts when src/, policies/, .env or the lock change")
    _print_inspector(url)
    inspector = _start_inspector(url) if args.inspector else None
    # Ctrl-C ends dev even where it was started with SIGINT ignored (a background job); SIGTERM too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    command = [sys.executable, "-m", PACKAGE, "dev", "--child", "--port", str(settings.port)]
    root = Path.cwd()
    served = subprocess.Popen(command)  # noqa: S603  # nosec B603 - this interpreter, this package
    try:
        for changes in watchfiles.watch(root, *_outside(root), watch_filter=_watched(root)):
            _say_what_changed(changes)
            # SIGTERM, as a deployment stops it: a graceful shutdown once serving, and a quiet end
            # while it is still importing (SIGINT there would print a KeyboardInterrupt traceback).
            _stop(served, signal.SIGTERM)
            served = subprocess.Popen(command)  # noqa: S603  # nosec B603
    finally:
        # Ctrl-C in the terminal reached the served process too (one process group): let it finish its
        # graceful shutdown before anything else is sent, or a second signal would cut it short.
        _stop(served, None)
        if inspector is not None:
            _stop(inspector, signal.SIGTERM)
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals | None, timeout: float = 30) -> None:
    """Ask `process` to stop with `sig` and wait; killed if it lingers. None: the terminal's Ctrl-C may
    have asked it already; SIGINT only if it is still up after a moment."""
    if sig is None:
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            sig = signal.SIGINT
    if sig is not None and process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _settings(port: int | None) -> Settings:
    from ..settings import load_settings

    overrides: dict[str, Any] = {"transport": "http", "host": LOOPBACK}
    if port:
        overrides["port"] = port
    return load_settings(**overrides)


def _serve(settings: Settings) -> int:
    import importlib

    from ..server.logs import configure_logging

    configure_logging(settings.log_level)  # as `serve` does: one plain format when stderr is not a terminal
    _warn_if_unlocked(settings)
    importlib.import_module(f"{PACKAGE}.transport.http.app").serve_http(settings, os.environ)
    return 0


def _warn_if_unlocked(settings: Settings) -> None:
    """Tools that differ from the reviewed lock: said at each start, never a reason to stop here."""
    from ..checks.report import scratch_settings
    from ..security.manifest import compare, read_lock, served
    from ..server.build import build_guard
    from ..server.services import open_services

    with scratch_settings(settings, offline=True) as scratch:
        current = served(build_guard(scratch, open_services(scratch)))
    try:
        changes = compare(read_lock(LOCK_FILE), current)
    except ValueError as exc:
        changes = [str(exc)]
    for change in changes:
        print(f"WARNING  {change}", file=sys.stderr)
    if changes:
        print(
            f"WARNING  the served tools differ from {LOCK_FILE}: `check` fails until you review them "
            f"and run `{answers.COMMAND} check --update-lock`",
            file=sys.stderr,
        )


def _outside(root: Path) -> list[Path]:
    """The package's directory when it is not under the project (installed elsewhere): watched too."""
    package = Path(__file__).resolve().parents[1]
    return [] if package.is_relative_to(root.resolve()) else [package]


def _watched(root: Path) -> Any:
    from watchfiles import DefaultFilter

    package = Path(__file__).resolve().parents[1]
    watched = (package, root.resolve() / "policies")
    files = (root.resolve() / ".env", root.resolve() / LOCK_FILE)

    class Watched(DefaultFilter):
        """The project's code (tool_settings.py and tools/ are in it), policies/, .env and the lock."""

        def __call__(self, change: Any, path: str) -> bool:
            where = Path(path).resolve()
            return super().__call__(change, path) and (
                where in files or any(where.is_relative_to(folder) for folder in watched)
            )

    return Watched()


def _say_what_changed(changes: set[tuple[Any, str]]) -> None:
    names = sorted({os.path.relpath(path) for _, path in changes})
    print(f"{answers.COMMAND} dev: {', '.join(names[:5])} changed; restarting", file=sys.stderr)


def _print_inspector(url: str) -> None:
    header = f'--header "Authorization: Bearer ${SECRET}"'
    print(f"MCP Inspector (Node 22+; ${SECRET} holds {WHAT}):")
    print(f"  npx -y {INSPECTOR} --transport http --server-url {url} {header}")
    print(f"  npx -y {INSPECTOR} --cli {url} --transport http --method tools/list {header}")


def _start_inspector(url: str) -> subprocess.Popen[bytes] | None:
    npx = shutil.which("npx")
    if npx is None:
        print("--inspector: npx (Node 22+) is not on PATH; serving without the Inspector", file=sys.stderr)
        return None
    # No credential on its command line (other users can read it): add the header in its Authentication.
    print("Starting the Inspector: add the Authorization header under Authentication.")
    inspector = [npx, "-y", INSPECTOR, "--transport", "http", "--server-url", url]
    return subprocess.Popen(inspector)  # noqa: S603  # nosec B603 - a fixed command, no shell
