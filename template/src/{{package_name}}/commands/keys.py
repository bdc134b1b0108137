"""`keys add | rotate | revoke | list`: named API keys in .env, stored as digests only.

.env is edited in place with python-dotenv's set_key (the other lines, comments and order stay; it
writes a temporary file beside .env and renames it over, so a crash leaves the old file whole), then
set to mode 600. A new raw key is printed once and never written anywhere: .env holds its digest.
A rotated-out key stays valid until its grace ends (`<name>@<end>:sha256:...`, security/identity/keys.py);
entries whose end has passed are dropped the next time `keys` writes the variable.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .. import answers
from ..security.identity.keys import (
    KeyEntry,
    KeyFormatError,
    check_name,
    check_scopes,
    digest_of,
    new_key,
    parse_keys,
    split_entries,
)
from ..security.identity.principal import ALL_TOOL_SCOPES

ENV_FILE = Path(".env")
_GRACE = re.compile(r"^(\d{1,6})([smhd])$")
_FINGERPRINT = re.compile(r"^key:[0-9a-f]{12}$")  # how `list` and `check` name an unnamed key
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class KeysError(Exception):
    """What `keys` cannot do, with the fix."""


def add_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="add, rotate, revoke and list named API keys in .env")
    actions = keys.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="a new named key: prints it once, stores its digest")
    add.add_argument("name")
    add.add_argument("--scopes", help="comma-separated scopes the key is limited to (default: every tool)")
    add.add_argument("--groups", help="comma-separated groups the holder is in (Cedar policies read them)")
    rotate = actions.add_parser("rotate", help="a new key for NAME; the old one lasts until --grace ends")
    rotate.add_argument("name")
    rotate.add_argument("--grace", default="1d", help="how long the old key stays valid: 0, 30m, 12h, 7d")
    revoke = actions.add_parser("revoke", help="remove NAME's keys now")
    revoke.add_argument("name", help="a name, or key:<fingerprint> for an unnamed key (`keys list`)")
    revoke.add_argument("--old", action="store_true", help="only the keys a rotation left in their grace")
    actions.add_parser("list", help="names, scopes and what each reaches; never a key or a digest")
    for action in (add, rotate, revoke):
        action.add_argument("--admin", action="store_true", help="MCP_ADMIN_API_KEYS (/security/events)")
    keys.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            return _list(ENV_FILE)
        variable = "MCP_ADMIN_API_KEYS" if args.admin else "MCP_API_KEYS"
        entries = _read(ENV_FILE, variable)
        name = (
            args.name if args.action == "revoke" and _FINGERPRINT.match(args.name) else check_name(args.name)
        )
        if args.action == "add":
            kept, key = _add(entries, name, _scopes(args.scopes, admin=args.admin), _groups(args.groups))
        elif args.action == "rotate":
            kept, key = _rotate(entries, name, _grace(args.grace))
        else:
            kept, key = _revoke(entries, name, old_only=args.old), None
        _write(ENV_FILE, variable, kept)
    except (KeysError, KeyFormatError) as exc:
        print(f"{answers.COMMAND} keys: {exc}", file=sys.stderr)
        return 2
    if key:
        print(f"key: {key}")
        print(f"Give this key to {name} now: it is shown only once, and {ENV_FILE} keeps only its digest.")
    print(f"Restart the server (or let `{answers.COMMAND} dev` reload) for {variable} to take effect.")
    if variable in os.environ:
        print(f"WARNING: {variable} is set in the environment, which wins over {ENV_FILE}.")
    return 0


Entries = list[tuple[str, KeyEntry]]  # each entry's text as written, and what it says


def _read(path: Path, variable: str) -> Entries:
    from dotenv import dotenv_values

    value = (dotenv_values(path).get(variable) or "") if path.exists() else ""
    texts = split_entries(value)
    return list(zip(texts, parse_keys(value, variable), strict=True))


def _write(path: Path, variable: str, entries: Entries) -> None:
    from dotenv import set_key

    live = [text for text, entry in entries if not entry.expired()]
    for _, entry in entries:
        if entry.expired():
            print(f"Dropped {entry.principal_id}'s key whose grace ended (it was refused already).")
    set_key(path, variable, ",".join(live), quote_mode="never")  # keeps the file's mode
    if path.stat().st_mode & 0o777 != 0o600:
        path.chmod(0o600)
    print(f"Updated {variable} in {path} (mode 600).")


def _add(entries: Entries, name: str, scopes: frozenset[str], groups: frozenset[str]) -> tuple[Entries, str]:
    if any(entry.name == name and not entry.expired() for _, entry in entries):
        raise KeysError(f"{name} has a key already: `keys rotate {name}` gives them a new one")
    key = new_key()
    entry = KeyEntry(bytes.fromhex(digest_of(key).removeprefix("sha256:")), name, scopes, groups)
    print(f"Added {name} ({_reach_label(scopes)}).")
    return [*entries, (entry.line(), entry)], key


def _rotate(entries: Entries, name: str, grace: timedelta) -> tuple[Entries, str]:
    current = [entry for _, entry in entries if entry.name == name and not entry.expired()]
    if not current:
        raise KeysError(f"{name} has no key to rotate: `keys add {name}` makes one")
    end = (datetime.now(UTC) + grace).replace(microsecond=0)
    kept: Entries = []
    for text, entry in entries:
        if entry.name == name and grace:
            ends = min(entry.expires or end, end)
            entry = replace(entry, expires=ends)
            text = entry.line()
        elif entry.name == name:
            continue
        kept.append((text, entry))
    key = new_key()
    fresh = replace(current[0], digest=bytes.fromhex(digest_of(key).removeprefix("sha256:")), expires=None)
    when = f"until {end:%Y-%m-%d %H:%M:%S} UTC" if grace else "no longer (no grace)"
    print(f"Rotated {name}: the old key is valid {when}; `keys revoke {name} --old` ends it sooner.")
    return [*kept, (fresh.line(), fresh)], key


def _revoke(entries: Entries, name: str, *, old_only: bool) -> Entries:
    gone = [e for _, e in entries if e.principal_id == name and (e.expires is not None or not old_only)]
    if not gone:
        which = "key in its grace period" if old_only else "key"
        raise KeysError(f"{name} has no {which}: `keys list` shows the names")
    print(f"Revoked {len(gone)} key(s) of {name}: refused from the server's next start.")
    return [(text, entry) for text, entry in entries if not any(entry is e for e in gone)]


def _scopes(text: str | None, *, admin: bool) -> frozenset[str]:
    scopes = check_scopes(s.strip() for s in (text or "").split(",") if s.strip())
    if admin and scopes:
        raise KeysError("admin keys carry no scopes (they read /security/events only); drop --scopes")
    return scopes or frozenset({ALL_TOOL_SCOPES})


def _groups(text: str | None) -> frozenset[str]:
    return frozenset(check_name(g.strip(), "group") for g in (text or "").split(",") if g.strip())


def _grace(text: str) -> timedelta:
    if text == "0":
        return timedelta(0)
    match = _GRACE.match(text)
    if not match:
        raise KeysError(f"--grace {text!r}: write a number and a unit, e.g. 0, 30m, 12h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _reach_label(scopes: frozenset[str]) -> str:
    return "every tool" if ALL_TOOL_SCOPES in scopes else "scopes " + " ".join(sorted(scopes))


def _list(path: Path) -> int:
    tools = _locked_tools()
    for variable in ("MCP_API_KEYS", "MCP_ADMIN_API_KEYS"):
        entries = _read(path, variable)
        print(f"{variable}: {len(entries)} key(s)")
        held: dict[str, list[KeyEntry]] = {}
        for _, entry in entries:
            held.setdefault(entry.principal_id, []).append(entry)
        for holder, keys in held.items():
            unnamed = "" if keys[0].name else " (unnamed: `check` warns)"
            if variable == "MCP_ADMIN_API_KEYS":
                print(f"  {holder}{unnamed}: admin; {_status(keys)}")
                print("    reaches: /security/events and /metrics")
                continue
            print(f"  {holder}{unnamed}: {_reach_label(keys[0].scopes)}; {_status(keys)}")
            if tools is not None:
                reach = [t for t, needs in tools.items() if _reaches(keys[0].scopes, needs)]
                print(f"    reaches: {', '.join(reach) or 'no tool'} (the tools in tools.lock.json)")
    return 0


def _status(keys: list[KeyEntry]) -> str:
    now = datetime.now(UTC)
    notes = []
    for entry in keys:
        if entry.expires is None:
            notes.append("valid")
        else:
            verb = "expired at" if entry.expired(now) else "valid until"
            notes.append(f"{verb} {entry.expires:%Y-%m-%d %H:%M:%S} UTC")
    return f"{len(keys)} key{'s' if len(keys) > 1 else ''}: " + ", ".join(notes)


def _reaches(scopes: frozenset[str], needs: frozenset[str] | None) -> bool:
    """As the guard decides (Policy.admits): every scope it needs, or open to all (None)."""
    return needs is None or ALL_TOOL_SCOPES in scopes or needs <= scopes


def _locked_tools() -> dict[str, frozenset[str] | None] | None:
    """Each reviewed tool's scopes (None: open_to_all), from tools.lock.json; None without a lock."""
    from ..security.manifest import read_lock

    try:
        locked = read_lock(Path("tools.lock.json"))
    except ValueError:
        return None
    return {
        name: None if tool.get("open_to_all") else frozenset(tool.get("scopes", ()))
        for name, tool in locked["tools"].items()
    }
