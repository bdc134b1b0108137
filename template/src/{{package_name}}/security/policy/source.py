"""Reading policies/*.cedar: each policy with its id, file and line; parse errors named file:line.

Cedar's parser reports what is wrong but not where, so each file is cut into its policies (a policy
ends at a `;` outside strings and comments) and each is parsed on its own: an error is placed on the
first line at which the policy's text, cut there, fails the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from .base import PolicyError, policy_files

MAX_FILE_BYTES = 1_048_576
_ID = re.compile(r"^[\x20-\x7e]{1,200}$")


@dataclass(frozen=True, slots=True)
class Written:
    """One policy as written: its id (its `@id`, else file:line), where it is, its text, its JSON form."""

    id: str
    file: str
    line: int
    text: str
    est: dict[str, Any]

    @property
    def effect(self) -> str:
        return str(self.est["effect"])

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def read_policies(directory: Path) -> list[Written]:
    """Every policy in `directory`/*.cedar, parsed; raises PolicyError naming file:line and the fix."""
    written: list[Written] = []
    for path in policy_files(directory):
        written += read_file(path, f"{directory.name}/{path.name}")
    seen: dict[str, str] = {}
    for policy in written:
        if policy.id in seen:
            raise PolicyError(
                f"{policy.where}: @id({json.dumps(policy.id)}) is used again (first at "
                f"{seen[policy.id]}); give each policy its own @id"
            )
        seen[policy.id] = policy.where
    return written


def read_file(path: Path, shown: str) -> list[Written]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{shown}: cannot be read ({exc.strerror}); check its permissions") from None
    if len(raw) > MAX_FILE_BYTES:
        raise PolicyError(f"{shown}: larger than 1 MiB; split it into several files")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{shown}: not UTF-8 text; save it as UTF-8") from None
    return [_parse(shown, text, start, end) for start, end in split_policies(text)]


def _parse(shown: str, text: str, start: int, end: int) -> Written:
    chunk = text[start:end]
    first_line = text.count("\n", 0, start) + 1
    try:
        parsed = json.loads(cedarpy.policies_to_json_str(chunk))
    except ValueError as exc:
        line = first_line + _failing_line(chunk, str(exc))
        raise PolicyError(f"{shown}:{line}: {exc}; {_fix(str(exc))}") from None
    policies = parsed.get("staticPolicies", {})
    if parsed.get("templates") or len(policies) != 1:
        raise PolicyError(
            f"{shown}:{first_line}: a template (?principal or ?resource) or more than one policy here; "
            "write static policies, each ending with ;"
        )
    est = next(iter(policies.values()))
    lead = _leading_lines(chunk)
    line = first_line + lead
    annotations = est.get("annotations") or {}
    policy_id = annotations.get("id") or f"{shown}:{line}"
    if not isinstance(policy_id, str) or not _ID.match(policy_id):
        raise PolicyError(f"{shown}:{line}: @id must be 1 to 200 printable ASCII characters")
    return Written(policy_id, shown, line, "\n".join(chunk.split("\n")[lead:]).strip(), est)


def split_policies(text: str) -> list[tuple[int, int]]:
    """(start, end) of each policy in `text`: up to and including its `;`, outside strings and comments.

    Text after the last `;` that is not blank or a comment is a policy without its end: returned too,
    so that the parser names what is wrong with it.
    """
    spans: list[tuple[int, int]] = []
    start, i, n = 0, 0, len(text)
    while i < n:
        char = text[i]
        if char == "/" and text.startswith("//", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline
            continue
        if char == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif char == ";":
            spans.append((start, i + 1))
            start = i + 1
        i += 1
    if _code(text[start:]).strip():
        spans.append((start, n))
    return spans


def _code(text: str) -> str:
    return re.sub(r"//[^\n]*", "", text)


def _leading_lines(chunk: str) -> int:
    """Lines before the policy's first token (blank lines and comments above it)."""
    for offset, line in enumerate(chunk.split("\n")):
        if _code(line).strip():
            return offset
    return 0


def _failing_line(chunk: str, error: str) -> int:
    """The first line at which `chunk`, cut there, fails with `error`: where the mistake is."""
    lines = chunk.split("\n")
    for cut in range(1, len(lines) + 1):
        prefix = "\n".join(lines[:cut])
        if not _code(prefix).strip():
            continue
        try:
            cedarpy.policies_to_json_str(prefix)
        except ValueError as exc:
            if str(exc) == error:
                return cut - 1
    return _leading_lines(chunk)


def _fix(error: str) -> str:
    if "invalid token" in error:
        return "close each string with a double quote"
    if "invalid variable in the policy scope" in error:
        return "the scope is (principal, action, resource), each optionally with == or in"
    if "unexpected end of input" in error or "expected ;" in error:
        return "end each policy with ;"
    return "see the Cedar syntax in policies/README.md"
