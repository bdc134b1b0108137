"""The one place where secrets are scrubbed before anything reaches an event or a log line.

Three things are removed wherever they turn up: the values of settings marked secret (SecretStr),
credential-shaped text (bearer tokens, our keys, JWTs, common vendor keys, Authorization and Cookie
headers, passwords in URLs and query strings), and values stored under secret-sounding names.
Everything is also bounded in size, and tool arguments are only summarised: long text (file
contents, documents, query results) is replaced by its length, and the values of arguments an item
declared sensitive (`sensitive=` on @guard.tool, ...) by a keyed digest: kept out of the trail, yet
searchable for equality (`<command> audit digest VALUE` prints the digest of a value).

A configured secret is also found when it is disguised in a way anyone can undo (secret_forms.py);
credential-shaped text is found by its shape (patterns.py). Results for the model go through
`Redactor.result` (security/guard/execution.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from .patterns import REDACTED as REDACTED
from .patterns import SECRET_NAMES, remove_patterns
from .secret_forms import MIN_SECRET as MIN_SECRET
from .secret_forms import WITHHELD as WITHHELD
from .secret_forms import SecretScanner

MAX_STRING = 200
MAX_ITEMS = 20
MAX_DEPTH = 4
MAX_ARGUMENT_TEXT = 64
MAX_LOG_LINE = 16_000
_CACHED_CHARS = 256  # Redactor.text remembers what it made of texts up to this long
_CACHE_ENTRIES = 4_096  # at most ~2 MB
_CACHED_RESULT_CHARS = 64  # Redactor.result_text remembers results' short texts (names, enum-like values)
DIGEST_PREFIX = "hmac-sha256:"
ALL_ARGUMENTS = "*"  # in a `sensitive` set: every argument of the item
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
_SCALARS = (bool, int, float)


class Redactor:
    """Scrubs known secret values (from settings) and common key patterns, and bounds the size."""

    def __init__(self, secret_values: Iterable[str] = (), digest_key: bytes | None = None) -> None:
        self._secrets = SecretScanner(secret_values)
        # Without a key of the operator's, digests are comparable within this process only.
        self._digest_key = digest_key or secrets.token_bytes(32)
        # Short texts recur on every request (tool names, principal ids, client addresses, the access
        # log's fields): each is scrubbed once, then looked up. Emptied when full (one request id per
        # call fills it slowly; a clear is atomic, so threads that log share it safely).
        self._short: dict[tuple[str, int], str] = {}
        # Detail and argument names recur too: each is scrubbed and matched against SECRET_NAMES once.
        self._names: dict[str, tuple[str, bool]] = {}
        self._results: dict[tuple[str, bool], str] = {}  # short result texts, sanitised (at most ~0.5 MB)

    def text(self, value: str, limit: int = MAX_STRING) -> str:
        if len(value) > _CACHED_CHARS:
            return self._text(value, limit)
        done = self._short.get((value, limit))
        return done if done is not None else _kept(self._short, (value, limit), self._text(value, limit))

    def _text(self, value: str, limit: int) -> str:
        value = remove_patterns(self._secrets.remove(value))
        if len(value) > limit:
            value = value[:limit] + f"...[{len(value) - limit} more chars]"
        return value

    def result_text(self, value: str, *, callers_own_data: bool = False) -> str:
        """Text for the model: configured secrets always removed; credential-shaped text too, unless the
        tool declared its output the caller's own data (where `key=...` lines are content, not leaks)."""
        if len(value) > _CACHED_RESULT_CHARS:
            return self._result_text(value, callers_own_data)
        # A result's names and short values recur call after call.
        key = (value, callers_own_data)
        done = self._results.get(key)
        return done if done is not None else _kept(self._results, key, self._result_text(*key))

    def _result_text(self, value: str, callers_own_data: bool) -> str:
        value = self._secrets.remove(value)
        return value if callers_own_data else remove_patterns(value)

    def secret_in_bytes(self, data: bytes) -> bool:
        """Whether binary data holds a configured secret in one of the forms `text` knows (plain, another
        case, reversed, hex, base64), as single bytes (ASCII, UTF-8) or as UTF-16 (either byte order)."""
        return self._secrets.found_in_bytes(data)

    def result(self, value: T, *, callers_own_data: bool = False) -> T:
        """A copy of an MCP result (a model or its wire dict) with every text in it sanitised."""
        return cast(T, _Sanitiser(self, callers_own_data).walk(value))

    def value(self, value: Any, depth: int = 0, *, limit: int = MAX_STRING) -> Any:
        """A redacted, bounded copy of `value` that is safe to store as JSON."""
        kind = type(value)
        if kind is str:
            return self.text(value, limit)
        if value is None or kind in _SCALARS or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value, limit)
        if depth >= MAX_DEPTH:
            return "[nested]"
        if isinstance(value, Mapping):
            items = list(value.items())
            out: dict[str, Any] = {}
            for key, item in items[:MAX_ITEMS]:
                name, secret = self._name(str(key))
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

    def _name(self, key: str) -> tuple[str, bool]:
        """A mapping key as stored (scrubbed, bounded), and whether its value is withheld."""
        known = self._names.get(key)
        if known is not None:
            return known
        name = self.text(key, 60)
        return _kept(self._names, key, (name, SECRET_NAMES.search(name) is not None))

    def summary(self, arguments: Any, sensitive: frozenset[str] = frozenset()) -> Any:
        """Tool arguments for the audit trail: short values kept (redacted), long text only measured, and in
        `sensitive` arguments (every one, with `ALL_ARGUMENTS`) each text and number replaced by its digest
        (lists and objects keep their shape, so a value inside a condition stays searchable)."""
        if sensitive and isinstance(arguments, Mapping):
            every = ALL_ARGUMENTS in sensitive
            arguments = {
                name: self._digested(value, 0) if every or name in sensitive else value
                for name, value in arguments.items()
            }
        return self.value(_measure_long_text(arguments, 0))

    def digest(self, text: str) -> str:
        """A keyed digest of `text`: equal texts have equal digests, and without the key no text can be
        found from its digest (`<command> audit digest` prints it, to search the trail)."""
        mac = hmac.new(self._digest_key, text.encode(), hashlib.sha256).hexdigest()
        return DIGEST_PREFIX + mac[:32]

    def _digested(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.digest(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.digest(json.dumps(value))  # 42 as the text "42"
        if depth >= MAX_DEPTH or not isinstance(value, Mapping | list | tuple):
            return value if value is None or isinstance(value, bool) else "[nested]"
        if isinstance(value, Mapping):
            return {key: self._digested(item, depth + 1) for key, item in value.items()}
        return [self._digested(item, depth + 1) for item in value]


def _kept(cache: dict[K, V], key: K, value: V) -> V:
    """`value`, kept as `cache[key]`; a full cache is emptied (a clear is atomic: threads share it safely).
    Callers look up first themselves: a hit then costs one dict lookup."""
    if len(cache) >= _CACHE_ENTRIES:
        cache.clear()
    cache[key] = value
    return value


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


# Opaque values the server sealed itself (2026-07-28 requestState): changing a byte would break them.
_OPAQUE = frozenset({"requestState", "request_state"})
# Base64 fields (resource blobs, image and audio data): searched decoded, re-encoded if changed.
_BASE64 = frozenset({"blob", "data"})


class _Sanitiser:
    """Walks a result: wire dicts, lists and pydantic models alike, returning a sanitised copy."""

    def __init__(self, redactor: Redactor, callers_own_data: bool) -> None:
        self._redactor = redactor
        self._own = callers_own_data

    def walk(self, value: Any, key: str = "") -> Any:
        kind = type(value)
        if value is None or kind in _SCALARS:
            return value  # most leaves: no isinstance checks against ABCs for them
        if isinstance(value, str):
            if key in _BASE64:
                return self._blob(value)
            return self._redactor.result_text(value, callers_own_data=self._own)
        if isinstance(value, Mapping):
            return {k: item if k in _OPAQUE else self.walk(item, str(k)) for k, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.walk(item) for item in value]
        if isinstance(value, BaseModel):
            changes = {}
            for name in type(value).model_fields:
                item = getattr(value, name)
                if name not in _OPAQUE and item is not None:
                    clean = self.walk(item, name)
                    if clean != item:
                        changes[name] = clean
            return value.model_copy(update=changes) if changes else value
        return value

    def _blob(self, value: str) -> str:
        try:
            data = base64.b64decode(value, validate=True)
        except ValueError:
            return self._redactor.result_text(value, callers_own_data=self._own)
        # latin-1 maps bytes to characters one to one, so binary data survives the round trip.
        text = data.decode("latin-1")
        clean = self._redactor._secrets.remove(text)
        encoded = value if clean == text else base64.b64encode(clean.encode("latin-1")).decode()
        if self._redactor._secrets.found_in(encoded):  # seen only in another decoding (UTF-8 bytes)
            return base64.b64encode(WITHHELD.encode()).decode()
        return encoded


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


# Control characters in a logged value are written as escapes, so no value can end a log line and
# start a forged one (a prompt name with CR/LF and `{"logger":"security",...}` after it). Tab stays.
_LOG_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
_LOG_ESCAPES |= {0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}
# Lines of a traceback the traceback module writes itself; every other line comes from an exception
# message (which can hold anything a caller sent) and has its line breaks escaped.
_LAYOUT_ESCAPES = {c: e for c, e in _LOG_ESCAPES.items() if c != 0x0A}
_TRACEBACK_LINES = ("Traceback (most recent call last):", "During handling of", "The above exception")


def escape_controls(text: str) -> str:
    return text.translate(_LOG_ESCAPES)


def _format_exception(exc_info: Any) -> str:
    chunks = []
    for chunk in traceback.format_exception(*exc_info):
        if chunk.lstrip("\n").startswith(_TRACEBACK_LINES) or chunk.startswith(" "):
            # A frame (file, line, source) or a header: its own line breaks are the layout.
            chunks.append(chunk.translate(_LAYOUT_ESCAPES))
        else:
            chunks.append(escape_controls(chunk.removesuffix("\n")) + "\n")
    return "".join(chunks).rstrip("\n")


def _scrub_record(record: logging.LogRecord, redactor: Redactor) -> None:
    message = record.msg if isinstance(record.msg, str) else str(record.msg)
    record.msg = escape_controls(redactor.text(message, MAX_LOG_LINE))
    # Keep the shape of args (access-log formatters unpack them); scrub each text value.
    if isinstance(record.args, Mapping):
        record.args = {key: _scrub_arg(item, redactor) for key, item in record.args.items()}
    elif isinstance(record.args, tuple):
        record.args = tuple(_scrub_arg(item, redactor) for item in record.args)
    if record.exc_info and record.exc_info[0] is not None:
        # Exception messages can carry URLs with credentials: keep a scrubbed text copy only.
        record.exc_text = redactor.text(_format_exception(record.exc_info), MAX_LOG_LINE)
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redactor.text(record.stack_info, MAX_LOG_LINE)


def _scrub_arg(value: Any, redactor: Redactor) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    return escape_controls(redactor.text(text, MAX_LOG_LINE))
