"""`install CLIENT`: add this server to a client's configuration file, keeping everything else in it.

Each client's file, where it documents it, and the entry in its own format:
  claude-desktop  claude_desktop_config.json (macOS ~/Library/Application Support/Claude, Windows
                  %APPDATA%\\Claude; Linux ~/.config/Claude, where community builds read it); "mcpServers";
                  stdio only (remote servers are added in its Settings, not in this file)
  claude-code     ~/.claude.json, "mcpServers" (the user scope `claude mcp add -s user` writes)
  cursor          ~/.cursor/mcp.json, "mcpServers"
  vscode          the user profile's mcp.json (Code/User/mcp.json), "servers" (and "inputs")
Over stdio the client runs `uv --directory <this project> run <command> serve --transport stdio` with
uv's absolute path (clients started from a desktop do not have the shell's PATH). Over HTTP it gets the
URL, and an API key as a header read from the environment variable <COMMAND>_KEY (Claude Code,
Cursor) or asked once and stored by the client (VS Code), never written into the file; OAuth clients
find the authorization server themselves. A run that changes nothing writes nothing; otherwise the old
file is copied to <file>.<time>.bak first and the new one replaces it in one rename.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import answers

CLIENTS = ("claude-desktop", "claude-code", "cursor", "vscode")
KEY_VARIABLE = answers.COMMAND.upper().replace("-", "_") + "_KEY"


class InstallError(Exception):
    """The configuration cannot be written as asked; the message says what to do instead."""


def add_parser(commands: Any) -> None:
    install = commands.add_parser("install", help="add this server to a client's configuration")
    install.add_argument("client", choices=CLIENTS)
    install.add_argument("--config", type=Path, help="the client's file (default: where the client reads it)")
    install.add_argument(
        "--transport", choices=answers.TRANSPORTS, help="default: stdio when the project has it"
    )
    install.add_argument("--url", help="the server's URL for HTTP (default: http://127.0.0.1:MCP_PORT/mcp)")
    install.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    transport = args.transport or ("stdio" if "stdio" in answers.TRANSPORTS else "http")
    path = args.config or default_path(args.client)
    try:
        if transport == "stdio":
            name, entry = answers.COMMAND, _stdio_entry(args.client)
        else:
            name, entry = f"{answers.COMMAND}-http", _http_entry(args.client, args.url or _default_url())
        config = _read(path)
        changed = _merge(config, args.client, name, entry)
        if not changed:
            print(f"{path}: {name} is already there as it would be written; nothing changed.")
            return 0
        backup = _write(path, config)
    except InstallError as exc:
        print(f"{answers.COMMAND} install: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {changed} {name}" + (f" (the old file is {backup})" if backup else " (a new file)"))
    print(json.dumps({name: entry}, indent=2))
    if transport == "http" and "headers" in entry and args.client != "vscode":
        print(f"The client reads the key from ${KEY_VARIABLE}: set it where the client starts.")
    print("Restart the client (or reload its MCP servers) to connect.")
    return 0


def default_path(client: str) -> Path:
    home = Path.home()
    if client == "claude-code":
        return home / ".claude.json"
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    folder, file = ("Claude", "claude_desktop_config.json") if client == "claude-desktop" else ("Code", "")
    if sys.platform == "darwin":
        base = home / "Library" / "Application Support" / folder
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming") / folder
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / folder
    return base / file if file else base / "User" / "mcp.json"


def _stdio_entry(client: str) -> dict[str, Any]:
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV to its own path
    if not uv:
        raise InstallError("uv is not on PATH; install it (https://docs.astral.sh/uv/) and run this again")
    args = ["--directory", str(Path.cwd().resolve()), "run", answers.COMMAND, "serve", "--transport", "stdio"]
    entry: dict[str, Any] = {"command": str(Path(uv).resolve()), "args": args}
    return {"type": "stdio", **entry} if client in ("claude-code", "vscode") else entry


def _http_entry(client: str, url: str) -> dict[str, Any]:
    if client == "claude-desktop":
        raise InstallError(
            "Claude Desktop's file starts local (stdio) servers only: add the URL in its Settings "
            "(Connectors), or install with --transport stdio"
            + ("" if "stdio" in answers.TRANSPORTS else " from a project generated with stdio")
        )
    entry: dict[str, Any] = {"url": url}
    if client != "cursor":
        entry = {"type": "http", **entry}
    if answers.AUTH_MODE == "api_key":
        # Each client's own syntax for "from the environment" (VS Code: a prompt, stored encrypted).
        secret = {
            "claude-code": f"${{{KEY_VARIABLE}}}",
            "cursor": f"${{env:{KEY_VARIABLE}}}",
            "vscode": f"${{input:{answers.COMMAND}-key}}",
        }[client]
        entry["headers"] = {"Authorization": f"Bearer {secret}"}
    return entry


def _default_url() -> str:
    from ..settings import load_settings

    return f"http://127.0.0.1:{load_settings().port}/mcp"


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InstallError(
            f"{path} is not plain JSON ({exc}; comments?), so it is left as it is: write the entry to "
            "a file of its own with --config new.json and copy it in by hand"
        ) from None
    if not isinstance(config, dict):
        raise InstallError(f"{path} does not hold a JSON object; fix or move it, then run this again")
    return config


def _merge(config: dict[str, Any], client: str, name: str, entry: dict[str, Any]) -> str:
    """Put the entry in; what happened ("added", "replaced") or "" when it was there already."""
    section = "servers" if client == "vscode" else "mcpServers"
    servers = config.setdefault(section, {})
    if not isinstance(servers, dict):
        raise InstallError(f'"{section}" in the file is not a JSON object; fix it, then run this again')
    changed = "" if servers.get(name) == entry else ("replaced" if name in servers else "added")
    servers[name] = entry
    if client == "vscode" and "headers" in entry:
        changed = _vscode_input(config) or changed
    return changed


def _vscode_input(config: dict[str, Any]) -> str:
    inputs = config.setdefault("inputs", [])
    ident = f"{answers.COMMAND}-key"
    if not isinstance(inputs, list):
        raise InstallError('"inputs" in the file is not a JSON list; fix it, then run this again')
    if any(isinstance(item, dict) and item.get("id") == ident for item in inputs):
        return ""
    description = f"{answers.PROJECT_NAME} API key"
    # VS Code's prompt for the key ("password": typed hidden, stored encrypted); not a password itself.
    prompt = {"type": "promptString", "id": ident, "description": description}
    inputs.append({**prompt, "password": True})  # nosec B105
    return "added"


def _write(path: Path, config: dict[str, Any]) -> Path | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if path.exists():
        backup = path.with_name(f"{path.name}.{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.bak")
        shutil.copy2(path, backup)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        temporary.chmod(mode)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return backup
