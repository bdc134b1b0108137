"""The one place where secrets are scrubbed before anything reaches an event or a log line.

Three things are removed wherever they turn up: the values of settings marked secret (SecretStr),
credential-shaped text (bearer tokens, our keys, JWTs, common vendor keys, Authorization and Cookie
headers, passwords in URLs and query strings), and values stored under secret-sounding names.
Everything is also bounded in size, and tool arguments are only summarised: long text (file
contents, documents, query results) is replaced by its length.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"
MAX_STRING = 200
MAX_ITEMS = 20
MAX_DEPTH = 4
MAX_ARGUMENT_TEXT = 64
MAX_LOG_LINE = 16_000

_SECRET_NAMES = re.compile(
    r"(authorization|cookie|token|secret|passw|pwd|api[_-]?key|apikey|credential|private|"
    r"session[_-]?id|signature)",
    re.IGNORECASE,
)
_SECRET_PATTERNS = [
    # Whole header lines, as they appear in dumps of requests.
    re.compile(r"(?im)\b(?:proxy-)?authorization\s*[:=]\s*[^\r\n,;]+"),
    re.compile(r"(?im)\b(?:set-)?cookie\s*[:=]\s*[^\r\n]+"),
    re.compile(r"(?im)\bx-api-key\s*[:=]\s*[^\r\n,;]+"),
    re.compile(r"(?i)\b(?:bearer|basic)\s+[a-z0-9._~+/=-]{8,}"),
    re.compile(r"\bmcp_[A-Za-z0-9_-]{16,}"),  # our own keys
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"\b(?:sk|pk|rk)[-_](?:live|test|proj)?[-_]?[A-Za-z0-9]{16,}"),
    re.compile(r"\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
    # user:password@ in URLs (redis://:pw@host, https://user:pw@host)
    re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+@"),
    re.compile(
        r"(?i)\b(?:api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|id[_-]?token|token|password|"
        r"passwd|pwd|secret|client[_-]?secret|key|auth|sig|signature)=[^&\s\"']+"
    ),
]

# Something every pattern above needs: text without any of these cannot match, so is not scanned.
_TRIGGER = re.compile(
    r"(?i)authoriz|cookie|x-api-key|bearer|basic|mcp_|eyj|[spr]k[-_]|gh[opsu]_|github_pat|akia|xox|-----begin|://|="
)


class Redactor:
    """Scrubs known secret values (from settings) and common key patterns, and bounds the size."""

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self._values = sorted({v for v in secret_values if len(v) >= 8}, key=len, reverse=True)

    def text(self, value: str, limit: int = MAX_STRING) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if _TRIGGER.search(value):
            for pattern in _SECRET_PATTERNS:
                value = pattern.sub(REDACTED, value)
        if len(value) > limit:
            value = value[:limit] + f"...[{len(value) - limit} more chars]"
        return value

    def value(self, value: Any, depth: int = 0, *, limit: int = MAX_STRING) -> Any:
        """A redacted, bounded copy of `value` that is safe to store as JSON."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value, limit)
        if depth >= MAX_DEPTH:
            return "[nested]"
        if isinstance(value, Mapping):
            items = list(value.items())
            out: dict[str, Any] = {}
            for key, item in items[:MAX_ITEMS]:
                name = self.text(str(key), 60)
                secret = _SECRET_NAMES.search(name)
                out[name] = REDACTED if secret else self.value(item, depth + 1, limit=limit)
            if len(items) > MAX_ITEMS:
                out["..."] = f"{len(items) - MAX_ITEMS} more keys"
            return out
        if isinstance(value, list | tuple | set | frozenset):
            seq = list(value)
            cut = [self.value(item, depth + 1, limit=limit) for item in seq[:MAX_ITEMS]]
            if len(seq) > MAX_ITEMS:
                cut.append(f"... {len(seq) - MAX_ITEMS} more items")
            return cut
        return self.text(repr(value), limit)

    def summary(self, arguments: Any) -> Any:
        """Tool arguments for the audit trail: short values kept (redacted), long text only measured."""
        return self.value(_measure_long_text(arguments, 0))


def _measure_long_text(value: Any, depth: int) -> Any:
    if isinstance(value, str) and len(value) > MAX_ARGUMENT_TEXT:
        return f"[{len(value)} chars]"
    if depth >= MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {
            key: _measure_long_text(item, depth + 1) for key, item in list(value.items())[: MAX_ITEMS + 1]
        }
    if isinstance(value, list | tuple):
        return [_measure_long_text(item, depth + 1) for item in value[: MAX_ITEMS + 1]]
    return value


# ---- log lines -----------------------------------------------------------------------------------

_log_redactor: Redactor | None = None


def install_log_redaction(redactor: Redactor) -> None:
    """Scrub every log record created from now on, whichever logger or handler writes it.

    A record factory (not a handler filter) is used because the HTTP server and the SDK replace handlers
    when they configure logging; the factory stays in place. Installing twice only swaps the redactor.
    """
    global _log_redactor
    first = _log_redactor is None
    _log_redactor = redactor
    if not first:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _log_redactor is not None:
            _scrub_record(record, _log_redactor)
        return record

    logging.setLogRecordFactory(factory)


def _scrub_record(record: logging.LogRecord, redactor: Redactor) -> None:
    if isinstance(record.msg, str):
        record.msg = redactor.text(record.msg, MAX_LOG_LINE)
    else:
        record.msg = redactor.text(str(record.msg), MAX_LOG_LINE)
    # Keep the shape of args (access-log formatters unpack them); scrub each text value.
    if isinstance(record.args, Mapping):
        record.args = {key: _scrub_arg(item, redactor) for key, item in record.args.items()}
    elif isinstance(record.args, tuple):
        record.args = tuple(_scrub_arg(item, redactor) for item in record.args)
    if record.exc_info and record.exc_info[0] is not None:
        # Exception messages can carry URLs with credentials: keep a scrubbed text copy only.
        text = "".join(traceback.format_exception(*record.exc_info))
        record.exc_text = redactor.text(text.rstrip("\n"), MAX_LOG_LINE)
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redactor.text(record.stack_info, MAX_LOG_LINE)


def _scrub_arg(value: Any, redactor: Redactor) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redactor.text(value, MAX_LOG_LINE)
    return redactor.text(str(value), MAX_LOG_LINE)
