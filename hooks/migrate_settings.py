"""Copier migration: rename settings whose names changed, in .env and .env.example (standard library only).

`copier update` runs it in the project after applying a template version that crossed a rename (see
`_migrations` in copier.yml and CHANGELOG.md). `.env` is never rendered by the template, so without this
an old name would stop the server ("unknown setting"). Values, comments, order and file mode are kept;
when the new name is already set, the old line is commented out instead of making a duplicate.

    python migrate_settings.py <version>      # applies the renames listed for that version
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# version -> {old name: new name}
RENAMES: dict[str, dict[str, str]] = {
    "0.2.0": {"MCP_AUDIT_URL": "MCP_SECURITY_EVENTS_URL"},
}
FILES = (".env", ".env.example")


def assignment(name: str) -> re.Pattern[str]:
    """`NAME=`, `export NAME=` or a documented `# NAME=` line."""
    return re.compile(rf"^(?P<lead>\s*(?:#\s*)?(?:export\s+)?){re.escape(name)}(?P<rest>\s*=.*)$")


def has_value(rest: str) -> bool:
    """`= value` (after the name) holds something other than nothing, quotes or a comment."""
    value = rest.strip().removeprefix("=").split(" #")[0].strip().strip("'\"")
    return bool(value)


def rename_in(text: str, renames: dict[str, str]) -> tuple[str, list[str]]:
    lines = text.splitlines(keepends=True)
    changes: list[str] = []
    for old, new in renames.items():
        old_line, new_line = assignment(old), assignment(new)
        # Set means a value: an empty `NEW=` line (a copied .env.example) must not win over a real old value.
        new_is_set = any(
            (m := new_line.match(line)) and "#" not in m["lead"] and has_value(m["rest"]) for line in lines
        )
        old_has_value = any(
            (m := old_line.match(line)) and "#" not in m["lead"] and has_value(m["rest"]) for line in lines
        )
        for index, line in enumerate(lines):
            match = new_line.match(line)
            if match and old_has_value and not new_is_set and "#" not in match["lead"]:
                lines[index] = f"# empty; the value of {old} is renamed to {new} instead: {line.strip()}\n"
                changes.append(f"commented out the empty {new} ({old} has a value)")
                continue
            match = old_line.match(line)
            if not match:
                continue
            if new_is_set and "#" not in match["lead"]:
                # This form no longer matches `old_line`, so a second run changes nothing.
                lines[index] = f"# replaced by {new} (set above or below): {line.strip()}\n"
                changes.append(f"commented out {old} ({new} is set)")
            else:
                lines[index] = f"{match['lead']}{new}{match['rest']}" + ("\n" if line.endswith("\n") else "")
                changes.append(f"{old} -> {new}")
    return "".join(lines), changes


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in RENAMES:
        print(f"usage: migrate_settings.py {{{','.join(RENAMES)}}}", file=sys.stderr)
        return 2
    for name in FILES:
        path = Path(name)
        if not path.is_file():
            continue
        text, changes = rename_in(path.read_text(encoding="utf-8"), RENAMES[argv[0]])
        if changes:
            # Writing in place keeps the file's mode (.env stays 600).
            path.write_text(text, encoding="utf-8")
            print(f"migrate {argv[0]}: {name}: {'; '.join(changes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
