""".env read strictly before the settings are: every line a NAME=value, a comment or blank, each name once.

pydantic-settings reads .env with python-dotenv, which skips a line it cannot parse and keeps the last of
two lines with the same name: a line missing its `=` (a key pasted alone) would leave a setting at its
default, and a stray second MCP_API_KEYS line would drop every key of the first. Both stop `serve` and
`check` instead, naming the line.
"""

from __future__ import annotations

from pathlib import Path

from dotenv.parser import Binding, parse_stream


def problems(path: Path) -> list[str]:
    """What is wrong with the .env file at `path`, one sentence per line at fault (empty: nothing)."""
    if not path.is_file():
        return []
    found: list[str] = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            line = _line_of(binding)
            if binding.error:
                found.append(f"{path} line {line}: not NAME=value; fix or remove the line")
            elif binding.key is not None and binding.value is None:
                # Not quoted: a line of its own is as likely a pasted key as a name.
                found.append(f"{path} line {line}: has no `=`; write NAME=value")
            elif binding.key is not None:
                name = binding.key.upper()  # settings names are read without regard to case
                if name in first_line:
                    found.append(
                        f"{path} line {line}: {binding.key} is set again (first on line "
                        f"{first_line[name]}); keep one line (several values go on it, comma-separated)"
                    )
                else:
                    first_line[name] = line
    return found


def _line_of(binding: Binding) -> int:
    """The line the binding's text starts on (python-dotenv counts from the blank lines before it)."""
    text = binding.original.string
    return binding.original.line + text[: len(text) - len(text.lstrip())].count("\n")
