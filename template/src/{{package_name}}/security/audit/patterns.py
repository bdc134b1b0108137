"""Credential-shaped text, found by its shape alone: bearer tokens, our keys, JWTs, common vendor keys,
Authorization and Cookie headers, passwords in URLs and query strings, and `name=value` credentials.

`remove_patterns` cuts each out as one [redacted]; `SECRET_NAMES` are the names whose values are withheld
wherever they turn up (security/audit/redact.py).
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

SECRET_NAMES = re.compile(
    r"(authorization|cookie|token|secret|passw|pwd|api[_-]?key|apikey|credential|private|"
    r"session[_-]?id|signature)",
    re.IGNORECASE,
)
# Each pattern with what it cannot match without: one of some characters (checked first: a one-character
# search is the cheapest), then one of some lower-case literals. A pattern runs only on text that holds
# both, which keeps large results cheap (a regex that starts with \b tries every position).
_SECRET_PATTERNS: list[tuple[tuple[str, ...], re.Pattern[str]]] = [
    # Whole header lines, as they appear in dumps of requests.
    ((":=", "authorization"), re.compile(r"(?im)\b(?:proxy-)?authorization\s*[:=]\s*[^\r\n,;]+")),
    ((":=", "cookie"), re.compile(r"(?im)\b(?:set-)?cookie\s*[:=]\s*[^\r\n]+")),
    ((":=", "x-api-key"), re.compile(r"(?im)\bx-api-key\s*[:=]\s*[^\r\n,;]+")),
    (("", "bearer", "basic"), re.compile(r"(?i)\b(?:bearer|basic)\s+[a-z0-9._~+/=-]{8,}")),
    (("_", "mcp_"), re.compile(r"\bmcp_[A-Za-z0-9_-]{16,}")),  # our own keys
    ((".", "eyj"), re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")),  # JWTs
    (
        ("-_", "sk-", "sk_", "pk-", "pk_", "rk-", "rk_"),
        re.compile(r"\b(?:sk|pk|rk)[-_](?:live|test|proj)?[-_]?[A-Za-z0-9]{16,}"),
    ),
    (
        ("_", "ghp_", "gho_", "ghs_", "ghu_", "github_pat_"),
        re.compile(r"\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{20,}"),
    ),
    (("", "akia"), re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    (("-", "xox"), re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    (
        ("-", "-----begin"),
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
    ),
    # user:password@ in URLs (redis://:pw@host, https://user:pw@host)
    ((":", "://"), re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+@")),
]
# `name=value` credentials (api_key=..., token=..., password=...). The names are searched in the reversed
# text, where the pattern starts with "=": a pattern that starts with the names was tried at every word,
# ~100 ms per MB of configuration-like text.
_REVERSED_CREDENTIAL_NAME = re.compile(
    r"=(?:yek[_-]?ipa|yekipa|nekot[_-]?ssecca|nekot[_-]?hserfer|nekot[_-]?di|nekot|drowssap|dwssap|dwp|"
    r"terces[_-]?tneilc|terces|yek|htua|erutangis|gis)\b"
)
_CREDENTIAL_VALUE = re.compile(r"[^&\s\"']+")


def remove_credentials(value: str, lowered: str) -> str:
    """Cut each `name=value` whose name is a credential's, name and value, as one [redacted]."""
    size = len(value)
    # (where the name starts, where its "=" is), left to right
    reversed_names = _REVERSED_CREDENTIAL_NAME.finditer(lowered[::-1])
    names = [(size - m.end(), size - 1 - m.start()) for m in reversed_names]
    parts: list[str] = []
    done = 0
    for start, equals in reversed(names):
        found = _CREDENTIAL_VALUE.match(value, equals + 1) if start >= done else None
        if found:
            parts += (value[done:start], REDACTED)
            done = found.end()
    return "".join(parts) + value[done:] if parts else value


# Short text (event fields, log lines) is checked with one regex for anything a pattern needs; long
# text (results) with the per-pattern literals above, since a regex alternation scans it slowly.
_TRIGGER = re.compile(
    r"(?i)authoriz|cookie|x-api-key|bearer|basic|mcp_|eyj|[spr]k[-_]|gh[opsu]_|github_pat|akia|xox|-----begin|://|="
)
SHORT_TEXT = 2_000


def remove_patterns(value: str) -> str:
    if len(value) < SHORT_TEXT and not _TRIGGER.search(value):
        return value
    lowered = value.lower()
    for (chars, *needles), pattern in _SECRET_PATTERNS:
        if (not chars or any(c in lowered for c in chars)) and any(n in lowered for n in needles):
            value = pattern.sub(REDACTED, value)
    if "=" in value:
        value = remove_credentials(value, value.lower())
    return value
