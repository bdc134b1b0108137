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
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Generic, TypeVar
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
    """One configured secret: each string a result is searched for, with the regex that cuts it out (its
    text made at the first hit: for 1,000 raw keys, making them all took seconds of start-up)."""

    def __init__(self, secret: str) -> None:
        plain = "".join(secret.split())
        data = secret.strip().encode()
        # (searched in the lower-cased view?, strings to search for, the removing regex's text, when asked).
        # Case changes, reversal and hex (either case) fold; base64 is case-sensitive.
        self.forms: list[tuple[bool, tuple[str, ...], Callable[[], str]]] = [
            (True, (text.lower(),), partial(_spelled, text, fold=True))
            for text in dict.fromkeys((plain, plain[::-1], data.hex()))
        ]
        for offset in (0, 1, 2):
            core = _b64_core(data, offset)
            if len(core) >= MIN_SECRET:
                needles = tuple(dict.fromkeys((core, core.translate(_URLSAFE))))
                self.forms.append((False, needles, partial(_spelled, core, fold=False)))
        self.length = len(plain)


def _spelled(text: str, *, fold: bool) -> str:
    """The regex for `text` in any spelling `_one_char` knows, with `_GAP` between its characters (base64,
    which does not fold, accepts the URL-safe alphabet's twins)."""
    return _GAP.join(_one_char(c, fold=fold, alternatives="" if fold else _B64_TWIN.get(c, "")) for c in text)


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


_AUTOMATON_FROM = 64  # needles: fewer are quicker searched one by one (each `in` is one C search)
S = TypeVar("S", str, bytes)


class _Needles(Generic[S]):
    """Strings searched for together: one by one when few, all in one pass when many (Aho-Corasick, so
    1,000 raw keys, each in nine forms, cost one scan of a result rather than 9,000)."""

    def __init__(self, needles: Sequence[S], automaton: Any) -> None:
        self.needles: tuple[S, ...] = tuple(needles)
        many = automaton is not None and len(self.needles) >= _AUTOMATON_FROM
        self._automaton = automaton(list(self.needles)) if many else None

    def in_any(self, views: Iterable[S]) -> bool:
        if self._automaton is None:
            return any(needle in view for view in views for needle in self.needles)
        return any(self._automaton.find_matches_as_indexes(view) for view in views)

    def found(self, views: Iterable[S]) -> set[S]:
        """Every needle in any of `views` (overlapping ones too: a secret may hold another)."""
        if self._automaton is None:
            return {needle for needle in self.needles if any(needle in view for view in views)}
        return {
            self.needles[index]
            for view in views
            for index, _, _ in self._automaton.find_matches_as_indexes(view, overlapping=True)
        }


def _automata() -> tuple[Any, Any]:
    """ahocorasick_rs' automata, or none where it has no wheel (Windows on ARM64): then every needle is
    searched for by itself, with the same results, only slower with many raw keys."""
    try:
        from ahocorasick_rs import AhoCorasick, BytesAhoCorasick
    except ImportError:  # pragma: no cover - a platform without its wheel
        return None, None
    return AhoCorasick, BytesAhoCorasick


class SecretScanner:
    """Finds and removes every configured secret, in every form `_KnownSecret` lists."""

    def __init__(self, secrets: Iterable[str]) -> None:
        known = [_KnownSecret(s) for s in dict.fromkeys(secrets) if len("".join(s.split())) >= MIN_SECRET]
        # Longest first, so a secret that contains another is removed whole.
        known.sort(key=lambda k: k.length, reverse=True)
        self._forms = [form for k in known for form in k.forms]
        text_automaton, self._bytes_automaton = _automata()
        folded = dict.fromkeys(n for fold, needles, _ in self._forms if fold for n in needles)
        exact = dict.fromkeys(n for fold, needles, _ in self._forms if not fold for n in needles)
        self._folded = _Needles(list(folded), text_automaton)
        self._exact = _Needles(list(exact), text_automaton)
        # Compiled on the first hit of each form: start-up stays quick, and a cut runs only the forms seen.
        self._compiled: dict[int, re.Pattern[str]] = {}
        self._byte_needles: tuple[_Needles[bytes], _Needles[bytes]] | None = None

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
        return self._exact.in_any(views) or self._folded.in_any(folded)

    def found_in_bytes(self, data: bytes) -> bool:
        """`found_in` for binary data: byte searches only (a megabyte takes milliseconds), so the
        whitespace-split and URL- or entity-encoded variants of text are not looked for here."""
        if self._byte_needles is None:
            self._byte_needles = (
                _Needles(_byte_forms(self._exact.needles), self._bytes_automaton),
                _Needles(_byte_forms(self._folded.needles), self._bytes_automaton),
            )
        exact, folded = self._byte_needles
        if exact.in_any((data,)):
            return True
        return bool(folded.needles) and folded.in_any((data.lower(),))

    def _hits(self, text: str) -> list[int]:
        views, folded = self._views(text)
        seen = self._exact.found(views) | self._folded.found(folded)
        return [index for index, (_, needles, _) in enumerate(self._forms) if seen.intersection(needles)]

    def remove(self, text: str) -> str:
        """`text` without the secrets; wholly withheld if a form was seen but cannot be cut out exactly."""
        if not self.found_in(text):
            return text
        for index in self._hits(text):
            if index not in self._compiled:
                self._compiled[index] = re.compile(self._forms[index][2]())
            text = self._compiled[index].sub(REDACTED, text)
        return WITHHELD if self.found_in(text) else text
