"""The one place where secrets are scrubbed before anything reaches an event or a log line.

Three things are removed wherever they turn up: the values of settings marked secret (SecretStr),
credential-shaped text (bearer tokens, our keys, JWTs, common vendor keys, Authorization and Cookie
headers, passwords in URLs and query strings), and values stored under secret-sounding names.
Everything is also bounded in size, and tool arguments are only summarised: long text (file
contents, documents, query results) is replaced by its length.

A configured secret is also found when it is disguised in a way anyone can undo: another case, hex,
base64 (standard or URL-safe, at any alignment, so `base64("Bearer <key>")` too), URL encoding, HTML
entities, reversed, or split by whitespace. The forms are worked out once, at start-up; a result is
searched in two views (whitespace removed; and URL- and entity-decoded), and only a hit pays for the
exact removal. Results for the model go through `Redactor.result` (security/guard/execution.py).
"""

from __future__ import annotations

import base64
import html
import html.entities
import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast
from urllib.parse import unquote

from pydantic import BaseModel

REDACTED = "[redacted]"
WITHHELD = "[withheld: this text contained a configured secret]"
MIN_SECRET = 8  # shorter values would match ordinary text
MAX_STRING = 200
MAX_ITEMS = 20
MAX_DEPTH = 4
MAX_ARGUMENT_TEXT = 64
MAX_LOG_LINE = 16_000
_CACHED_CHARS = 256  # Redactor.text remembers what it made of texts up to this long
_CACHE_ENTRIES = 4_096  # at most ~2 MB
T = TypeVar("T")

_SECRET_NAMES = re.compile(
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


def _remove_credentials(value: str, lowered: str) -> str:
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
_SHORT = 2_000


def _remove_patterns(value: str) -> str:
    if len(value) < _SHORT and not _TRIGGER.search(value):
        return value
    lowered = value.lower()
    for (chars, *needles), pattern in _SECRET_PATTERNS:
        if (not chars or any(c in lowered for c in chars)) and any(n in lowered for n in needles):
            value = pattern.sub(REDACTED, value)
    if "=" in value:
        value = _remove_credentials(value, value.lower())
    return value


# ---- configured secrets in every trivially decodable form ------------------------------------------

# Between two characters of a disguised secret: whitespace, raw or URL- or entity-encoded.
_GAP = r"(?:\s|%(?:20|0[9aAdD])|&(?:nbsp|Tab|NewLine|#0*(?:9|10|13|32|160)|#[xX]0*(?:9|[aAdD]|20|[aA]0));?)*"
_NAMED_ENTITIES: dict[str, list[str]] = {}
for _name, _char in html.entities.html5.items():
    _NAMED_ENTITIES.setdefault(_char, []).append(_name)


def _hex_digits(value: int, width: int) -> str:
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _one_char(char: str, *, fold: bool, alternatives: str = "") -> str:
    """A regex for one character of a secret, written plainly, URL-encoded or as an HTML entity."""
    chars = dict.fromkeys((char.lower() + char.upper() if fold else char) + alternatives)
    forms = [re.escape(c) for c in chars]
    for c in chars:
        forms.append("".join("%" + _hex_digits(b, 2) for b in c.encode()))
        forms.append(f"&\\#0*{ord(c)};?")
        forms.append(f"&\\#[xX]0*{_hex_digits(ord(c), 1)};?")
        forms.extend(re.escape("&" + name) for name in _NAMED_ENTITIES.get(c, ()))
    return "(?:" + "|".join(forms) + ")"


def _b64_core(data: bytes, offset: int) -> str:
    """The base64 characters that depend only on `data` when it starts `offset` bytes into a blob."""
    encoded = base64.b64encode(bytes(offset) + data).decode()
    total = offset + len(data)
    end = 4 * (total // 3) + (total % 3)  # a trailing partial group still fixes 1 or 2 characters
    return encoded[(0, 2, 3)[offset] : end]


class _KnownSecret:
    """One configured secret: each string a result is searched for, with the regex that cuts it out."""

    def __init__(self, secret: str) -> None:
        plain = "".join(secret.split())
        data = secret.strip().encode()
        # (searched in the lower-cased view?, strings to search for, regex text that removes them).
        # Case changes, reversal and hex (either case) fold; base64 is case-sensitive.
        self.forms: list[tuple[bool, tuple[str, ...], str]] = [
            (True, (text.lower(),), _GAP.join(_one_char(c, fold=True) for c in text))
            for text in dict.fromkeys((plain, plain[::-1], data.hex()))
        ]
        for offset in (0, 1, 2):
            core = _b64_core(data, offset)
            if len(core) >= MIN_SECRET:
                regex = _GAP.join(_one_char(c, fold=False, alternatives=_B64_TWIN.get(c, "")) for c in core)
                self.forms.append((False, tuple(dict.fromkeys((core, core.translate(_URLSAFE)))), regex))
        self.length = len(plain)


_URLSAFE = str.maketrans("+/", "-_")
# Every character str.split() splits on (str.translate is faster than split-and-join).
_NO_SPACE = dict.fromkeys(c for c in range(0x3001) if chr(c).isspace())
_B64_TWIN = {"+": "-", "/": "_"}


def _byte_forms(needles: tuple[str, ...]) -> tuple[bytes, ...]:
    """Each needle as UTF-8 and as UTF-16 (little-endian without its last NUL, so big-endian matches too)."""
    forms = [f for n in needles for f in (n.encode(), n.encode("utf-16-le").removesuffix(b"\x00"))]
    return tuple(dict.fromkeys(forms))


class _SecretScanner:
    """Finds and removes every configured secret, in every form `_KnownSecret` lists."""

    def __init__(self, secrets: Iterable[str]) -> None:
        known = [_KnownSecret(s) for s in dict.fromkeys(secrets) if len("".join(s.split())) >= MIN_SECRET]
        # Longest first, so a secret that contains another is removed whole.
        known.sort(key=lambda k: k.length, reverse=True)
        self._forms = [form for k in known for form in k.forms]
        self._folded = tuple(dict.fromkeys(n for fold, needles, _ in self._forms if fold for n in needles))
        self._exact = tuple(dict.fromkeys(n for fold, needles, _ in self._forms if not fold for n in needles))
        # Compiled on the first hit of each form: start-up stays quick, and a cut runs only the forms seen.
        self._compiled: dict[int, re.Pattern[str]] = {}
        self._byte_needles: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None = None

    def _views(self, text: str) -> tuple[list[str], list[str]]:
        # split-and-join is quicker on short text, str.translate on long text.
        views = ["".join(text.split()) if len(text) < _SHORT else text.translate(_NO_SPACE)]
        if "%" in text or "&" in text:
            views.append("".join(html.unescape(unquote(text)).split()))
        return views, [view.lower() for view in views]

    def found_in(self, text: str) -> bool:
        """The common case, kept cheap: no secret in `text` (one substring search per form and view)."""
        if len(text) < MIN_SECRET or not self._forms:
            return False
        views, folded = self._views(text)
        if any(needle in view for view in views for needle in self._exact):
            return True
        return any(needle in view for view in folded for needle in self._folded)

    def found_in_bytes(self, data: bytes) -> bool:
        """`found_in` for binary data: byte searches only (a megabyte takes milliseconds), so the
        whitespace-split and URL- or entity-encoded variants of text are not looked for here."""
        if self._byte_needles is None:
            self._byte_needles = (_byte_forms(self._exact), _byte_forms(self._folded))
        exact, folded = self._byte_needles
        if any(needle in data for needle in exact):
            return True
        lowered = data.lower() if folded else b""
        return any(needle in lowered for needle in folded)

    def _hits(self, text: str) -> list[int]:
        views, folded = self._views(text)
        return [
            index
            for index, (fold, needles, _) in enumerate(self._forms)
            if any(needle in view for view in (folded if fold else views) for needle in needles)
        ]

    def remove(self, text: str) -> str:
        """`text` without the secrets; wholly withheld if a form was seen but cannot be cut out exactly."""
        if not self.found_in(text):
            return text
        for index in self._hits(text):
            if index not in self._compiled:
                self._compiled[index] = re.compile(self._forms[index][2])
            text = self._compiled[index].sub(REDACTED, text)
        return WITHHELD if self.found_in(text) else text


class Redactor:
    """Scrubs known secret values (from settings) and common key patterns, and bounds the size."""

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        self._secrets = _SecretScanner(secret_values)
        # Short texts recur on every request (tool names, principal ids, client addresses, the access
        # log's fields): each is scrubbed once, then looked up. Emptied when full (one request id per
        # call fills it slowly; a clear is atomic, so threads that log share it safely).
        self._short: dict[tuple[str, int], str] = {}

    def text(self, value: str, limit: int = MAX_STRING) -> str:
        if len(value) > _CACHED_CHARS:
            return self._text(value, limit)
        key = (value, limit)
        done = self._short.get(key)
        if done is None:
            done = self._text(value, limit)
            if len(self._short) >= _CACHE_ENTRIES:
                self._short.clear()
            self._short[key] = done
        return done

    def _text(self, value: str, limit: int) -> str:
        value = _remove_patterns(self._secrets.remove(value))
        if len(value) > limit:
            value = value[:limit] + f"...[{len(value) - limit} more chars]"
        return value

    def result_text(self, value: str, *, callers_own_data: bool = False) -> str:
        """Text for the model: configured secrets always removed; credential-shaped text too, unless the
        tool declared its output the caller's own data (where `key=...` lines are content, not leaks)."""
        value = self._secrets.remove(value)
        return value if callers_own_data else _remove_patterns(value)

    def secret_in_bytes(self, data: bytes) -> bool:
        """Whether binary data holds a configured secret in one of the forms `text` knows (plain, another
        case, reversed, hex, base64), as single bytes (ASCII, UTF-8) or as UTF-16 (either byte order)."""
        return self._secrets.found_in_bytes(data)

    def result(self, value: T, *, callers_own_data: bool = False) -> T:
        """A copy of an MCP result (a model or its wire dict) with every text in it sanitised."""
        return cast(T, _Sanitiser(self, callers_own_data).walk(value))

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
