r"""Configured secrets in every form anyone can undo: another case, hex, base64 (standard or URL-safe, at
any alignment, so `base64("Bearer <key>")` too), URL encoding, HTML entities, JSON string escapes
(`\u002B` as .NET writes `+`, `\/` as PHP writes `/`, `\"`, `\\`, any `\uXXXX`, escaped again inside
JSON), reversed, or split by whitespace.

The forms are worked out once, at start-up; a text is searched in up to three views (whitespace removed;
URL- and entity-decoded; JSON-unescaped), and only a hit pays for the exact removal (`SecretScanner.remove`).
"""

from __future__ import annotations

import base64
import html
import html.entities
import re
from collections.abc import Iterable
from urllib.parse import unquote

from .patterns import REDACTED, SHORT_TEXT

WITHHELD = "[withheld: this text contained a configured secret]"
MIN_SECRET = 8  # shorter values would match ordinary text

# Between two characters of a disguised secret: whitespace, raw or URL-, entity- or JSON-encoded.
_GAP = (
    r"(?:\s|%(?:20|0[9aAdD])|&(?:nbsp|Tab|NewLine|#0*(?:9|10|13|32|160)|#[xX]0*(?:9|[aAdD]|20|[aA]0));?"
    r"|\\+(?:[nrt]|u00(?:20|0[9aAdD])))*"
)
_JSON_SHORT = '"\\/'  # the characters JSON may escape with a backslash alone
_JSON_ESCAPE = re.compile(r'\\(?:u([0-9a-fA-F]{4})|(["\\/bfnrt]))')
_JSON_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_JSON_DEPTH = 3  # JSON inside JSON inside JSON: each level doubles the backslashes
_NAMED_ENTITIES: dict[str, list[str]] = {}
for _name, _char in html.entities.html5.items():
    _NAMED_ENTITIES.setdefault(_char, []).append(_name)


def _hex_digits(value: int, width: int) -> str:
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _json_escaped(char: str) -> str:
    r"""A regex for `char` as a JSON string escape (`\u002b`, a surrogate pair, `\/`), escaped once or
    more."""
    data = char.encode("utf-16-be")
    units = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    forms = ["".join(r"\\+u" + _hex_digits(unit, 4) for unit in units)]
    if char in _JSON_SHORT:
        forms.append(r"\\+" + re.escape(char))
    return "|".join(forms)


def _one_char(char: str, *, fold: bool, alternatives: str = "") -> str:
    """A regex for one character of a secret, written plainly, URL-encoded, as an HTML entity or as a JSON
    string escape."""
    chars = dict.fromkeys((char.lower() + char.upper() if fold else char) + alternatives)
    forms = [re.escape(c) for c in chars]
    for c in chars:
        forms.append(_json_escaped(c))
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


def _json_unescaped(text: str) -> str:
    """`text` with JSON string escapes decoded, as often as they were applied (up to `_JSON_DEPTH`)."""
    for _ in range(_JSON_DEPTH):
        decoded = _JSON_ESCAPE.sub(_json_char, text)
        if decoded == text:
            break
        text = decoded
    # \uD83D\uDE00 decodes to two surrogates: join them into the character they encode.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _json_char(match: re.Match[str]) -> str:
    code, short = match.groups()
    return chr(int(code, 16)) if code else _JSON_SIMPLE.get(short, short)


class SecretScanner:
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
        views = ["".join(text.split()) if len(text) < SHORT_TEXT else text.translate(_NO_SPACE)]
        if "%" in text or "&" in text:
            views.append("".join(html.unescape(unquote(text)).split()))
        if "\\" in text:
            views.append("".join(_json_unescaped(text).split()))
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
