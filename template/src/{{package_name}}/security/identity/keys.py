"""API keys: generation, digests, names and scopes, and verification by digest (several at once).

An entry in MCP_API_KEYS (comma-separated) is one of
  sha256:<64 hex>                                a digest; the caller is named by its fingerprint
  <raw key>                                      the same, stored unhashed (hashed at start-up)
  <name>:sha256:<64 hex>                         a named key: the caller is <name>, whatever its digest
  <name>:sha256:<64 hex>:<scope>+<scope>...      a named key limited to those scopes
  <name>[<group>+<group>...]:sha256:<64 hex>...  a named key in those groups (read by Cedar policies)
  <name>[...]@<YYYYMMDDTHHMMSSZ>:sha256:<64 hex>...  a named key valid until that UTC time, then refused
  <name>:mcp_<key>                               a key made by keygen, stored unhashed, named (the
                                                 client sends mcp_<key>; the copy writes one such)
A name stays when its key is rotated (list the old and the new digest under the same name while
clients move; `keys rotate --grace` writes the old one with its end), so the audit trail, rate limits
and notes follow the person, not the key. Releases before the end existed refuse an entry that has one
(it is not a name they accept), so an old server never keeps a rotated-out key valid for ever. Scopes use
the same names as OAuth scopes: a tool's `scopes=` means the same with either kind of credential.
A key without scopes may call every tool. `admin` is not a scope: it is the class of the keys in
MCP_ADMIN_API_KEYS (they read /security/events and /metrics), so no tool key may carry it.

A raw key must be hard to guess (key_strength_problem): at least 128 bits by its length and alphabet, and
no pattern a cracker tries first (words, dates, keyboard runs, repeats), as zxcvbn estimates it. A digest
cannot be measured: make the key with keygen.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import string
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from mcp.server.auth.provider import AccessToken
from pydantic import Field

from .principal import ADMIN_SCOPE, ALL_TOOL_SCOPES

KEY_PREFIX = "mcp_"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_NAMED = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?:\[([^\]]*)\])?(?:@(\d{8}T\d{6}Z))?"
    r":sha256:([0-9a-fA-F]{64})(?::(.*))?$"
)
EXPIRY_FORMAT = "%Y%m%dT%H%M%SZ"  # ISO 8601 basic, UTC: no ':' to clash with the entry's own
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAMED_RAW = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63}):(" + KEY_PREFIX + r"[^:]*)$")
# An OAuth scope token (RFC 6749 section 3.3) without `+` and `,`, which separate scopes and entries here.
SCOPE = re.compile(r"^[\x21\x23-\x2a\x2d-\x5b\x5d-\x7e]{1,128}$")
# Visible ASCII only: a key with spaces or control characters would break the Authorization header.
_RAW_KEY = re.compile(r"^[\x21-\x7e]{16,512}$")
MIN_KEY_BITS = 128
# zxcvbn's estimate of the guesses a cracker needs, trying likely patterns first. It counts a random
# character as 10 guesses, so a random key scores far below its true strength (a 128-bit random url-safe
# key: about 10^22); `Welcome2026!Spring` scores 10^11.
MIN_KEY_GUESSES_LOG10 = 20
_ALPHABETS = (string.ascii_lowercase, string.ascii_uppercase, string.digits, string.punctuation)


ADMIN_IS_NOT_A_SCOPE = (
    "'admin' is not a scope a tool key may carry: admin is a kind of key. Remove it from the scopes, "
    "and give admin access with a key in MCP_ADMIN_API_KEYS (keygen --admin)"
)


class KeyFormatError(ValueError):
    """A configured key is neither a usable raw key, a sha256:<hex> digest, nor a named digest."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One configured key: its digest, and who holds it with what scopes. Never the key itself."""

    digest: bytes
    name: str | None = None
    scopes: frozenset[str] = frozenset({ALL_TOOL_SCOPES})
    groups: frozenset[str] = frozenset()
    expires: datetime | None = None  # a rotated-out key's end (UTC); None: valid until removed

    @property
    def principal_id(self) -> str:
        # A short fingerprint of the digest names an unnamed key in events without revealing it.
        return self.name or "key:" + self.digest.hex()[:12]

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or datetime.now(UTC)) >= self.expires

    def line(self) -> str:
        """The entry as MCP_API_KEYS holds it (digest form): name, groups, end, digest and scopes."""
        text = "sha256:" + self.digest.hex()
        if self.name is None:
            return text
        member = f"[{'+'.join(sorted(self.groups))}]" if self.groups else ""
        end = f"@{self.expires.strftime(EXPIRY_FORMAT)}" if self.expires else ""
        scopes = "" if ALL_TOOL_SCOPES in self.scopes else ":" + "+".join(sorted(self.scopes))
        return f"{self.name}{member}{end}:{text}{scopes}"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_name(text: str) -> str | None:
    """`text` (a person's name, a login) as a key name: ASCII letters, digits, '.', '_', '-'; None if
    nothing is left. "Zoë O'Brien" -> "zoe-o-brien"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9._-]+", "-", ascii_text.lower()).strip("-._")[:64].rstrip("-._")
    return name if NAME.match(name) else None


def key_strength_problem(key: str) -> str | None:
    """Why `key` is too easy to guess, or None. Measured on raw keys at start-up and by `check`."""
    alphabet = sum(len(chars) for chars in _ALPHABETS if any(c in chars for c in key))
    bits = len(key) * math.log2(max(alphabet, 2))
    if bits < MIN_KEY_BITS:
        return f"it carries about {bits:.0f} bits by its length and characters, below {MIN_KEY_BITS}"
    # Imported here: its dictionaries cost ~40 ms, paid only where a raw key is configured (not on stdio).
    from zxcvbn import zxcvbn

    # zxcvbn reads at most 72 characters; a weak beginning is enough to refuse a key.
    if zxcvbn(key[:72])["guesses_log10"] < MIN_KEY_GUESSES_LOG10:
        return "it is built from words, dates, sequences or repeats that a cracker tries first"
    return None


# Verdicts by the key's SHA-256 digest, never the key: `serve` parses MCP_API_KEYS twice (its start-up
# check, then the verifier), and zxcvbn takes ~10 ms a key (1,000 raw keys: 19 s to start, bench/scale.py).
_VERDICTS: dict[bytes, str | None] = {}


def _strength_verdict(key: str) -> str | None:
    digest = hashlib.sha256(key.encode()).digest()
    if digest not in _VERDICTS:
        _VERDICTS[digest] = key_strength_problem(key)
    return _VERDICTS[digest]


def digest_of(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def check_name(name: str, kind: str = "key") -> str:
    """A key's (or group's) name as keygen, `keys` and MCP_API_KEYS accept it: one rule for all three."""
    if not NAME.match(name):
        raise KeyFormatError(f"{name!r} is not a {kind} name: 1 to 64 letters, digits, '.', '_' or '-'")
    return name


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Scopes a tool key may carry, as keygen, `keys` and MCP_API_KEYS accept them: one rule for all."""
    wanted = frozenset(scopes)
    for scope in sorted(wanted):
        if not SCOPE.match(scope):
            raise KeyFormatError(f"{scope!r} is not a scope: visible ASCII without spaces, '+' or ','")
    if ADMIN_SCOPE in wanted:
        raise KeyFormatError(ADMIN_IS_NOT_A_SCOPE)
    return wanted


def entry_line(
    key: str, name: str | None = None, scopes: Iterable[str] = (), groups: Iterable[str] = ()
) -> str:
    """The text to put in MCP_API_KEYS for `key`: its digest, with the name, groups and scopes if given."""
    if name is None:
        if scopes or groups:
            raise KeyFormatError("scopes need a name, and so do groups: use --name with --scopes or --groups")
        return digest_of(key)
    check_name(name)
    member_of = frozenset(check_name(group, "group") for group in groups)
    wanted = check_scopes(scopes) or frozenset({ALL_TOOL_SCOPES})
    return KeyEntry(hashlib.sha256(key.encode()).digest(), name, wanted, member_of).line()


def _parse_entry(entry: str, variable: str, position: int) -> KeyEntry:
    where = f"{variable} entry {position}"
    if named := _NAMED.match(entry):
        name, group_text, end, hex_digest, scope_text = named.groups()
        groups = _groups(group_text, f"{where} ({name})")
        expires = _end(end, f"{where} ({name})")
        if scope_text is None:
            return KeyEntry(bytes.fromhex(hex_digest), name, groups=groups, expires=expires)
        scopes = [scope for scope in scope_text.split("+") if scope]
        bad = [scope for scope in scopes if not SCOPE.match(scope)]
        if bad or not scopes:
            raise KeyFormatError(
                f"{where} ({name}): after the digest write scopes joined by '+', e.g. :notes:read+notes:write"
            )
        try:
            wanted = check_scopes(scopes)
        except KeyFormatError as exc:
            raise KeyFormatError(f"{where} ({name}): {exc}") from None
        return KeyEntry(bytes.fromhex(hex_digest), name, wanted, groups, expires)
    if match := _DIGEST.match(entry.lower()):
        return KeyEntry(bytes.fromhex(match.group(1)))
    if not entry.lower().startswith("sha256:") and (named_raw := _NAMED_RAW.match(entry)):
        name, raw = named_raw.groups()
        return replace(_parse_entry(raw, variable, position), name=name)
    if entry.lower().startswith("sha256:") or ":sha256:" in entry.lower():
        raise KeyFormatError(
            f"{where}: a digest must be sha256: followed by 64 hex digits, optionally after name: "
            "(run keygen to print a line to paste)"
        )
    if not _RAW_KEY.match(entry):
        raise KeyFormatError(f"{where}: a key must be 16 to 512 visible ASCII characters")
    if weak := _strength_verdict(entry):
        raise KeyFormatError(
            f"{where} is too easy to guess: {weak}. Use a key from `keygen` (256 random bits), "
            "and store its sha256: digest instead"
        )
    return KeyEntry(hashlib.sha256(entry.encode()).digest())


def _end(text: str | None, where: str) -> datetime | None:
    try:
        return datetime.strptime(text, EXPIRY_FORMAT).replace(tzinfo=UTC) if text else None
    except ValueError:
        raise KeyFormatError(f"{where}: @{text} is not a time: write @YYYYMMDDTHHMMSSZ (UTC)") from None


def _groups(text: str | None, where: str) -> frozenset[str]:
    groups = [group for group in (text or "").split("+") if group]
    if text is not None and (not groups or not all(NAME.match(group) for group in groups)):
        raise KeyFormatError(
            f"{where}: write groups as name[group+group]:sha256:..., each 1 to 64 letters, digits, "
            "'.', '_' or '-'"
        )
    return frozenset(groups)


def parse_keys(value: str, variable: str, *, allow_scopes: bool = True) -> list[KeyEntry]:
    """Turn `key1,sha256:<hex>,alice:sha256:<hex>:scope,...` into entries; raw keys are hashed at once."""
    entries = split_entries(value)
    parsed = [_parse_entry(entry, variable, position) for position, entry in enumerate(entries, start=1)]
    held: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for key in parsed:
        if key.name is None:
            continue
        if not allow_scopes and (key.scopes != {ALL_TOOL_SCOPES} or key.groups):
            raise KeyFormatError(
                f"{variable}: admin keys carry no scopes or groups (they read /security/events only); "
                f"remove them from {key.name}'s entry, and give tool access with a key in MCP_API_KEYS"
            )
        if held.setdefault(key.name, (key.scopes, key.groups)) != (key.scopes, key.groups):
            # One name is one caller: rotating a key must not quietly change what that caller may do.
            raise KeyFormatError(
                f"{variable}: the keys named {key.name} have different scopes or groups; make them one"
            )
    return parsed


def split_entries(value: str) -> list[str]:
    """The entries of a key variable as written, in order (parse_keys returns one KeyEntry for each)."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def raw_keys(value: str) -> list[str]:
    """The raw keys among the entries (so redaction knows them); digests and names are not secret."""
    entries = split_entries(value)
    raw = [entry for entry in entries if not _NAMED.match(entry) and not _DIGEST.match(entry.lower())]
    return [named.group(2) if (named := _NAMED_RAW.match(entry)) else entry for entry in raw]


def describe(entries: list[KeyEntry], *, admin: bool = False) -> list[str]:
    """`check`'s view of the keys: who holds them and with what scopes, never a key or a digest."""
    held: dict[str, list[KeyEntry]] = {}
    for key in entries:
        held.setdefault(key.principal_id, []).append(key)
    lines = []
    for holder, keys in held.items():
        if admin:
            allowed = "reads /security/events"
        elif ALL_TOOL_SCOPES in keys[0].scopes:
            allowed = "every tool"
        else:
            allowed = "scopes " + " ".join(sorted(keys[0].scopes))
        member = f", groups {' '.join(sorted(keys[0].groups))}" if keys[0].groups else ""
        lines.append(f"{holder}: {allowed}{member}{_validity(keys)}")
    return lines


def _validity(keys: list[KeyEntry]) -> str:
    """` (2 keys: rotating, one valid until ...)`: what a name's keys are doing, without the keys."""
    if len(keys) == 1 and keys[0].expires is None:
        return ""
    notes = [f"{len(keys)} keys: rotating"] if len(keys) > 1 else []
    for end in sorted(key.expires for key in keys if key.expires):
        state = "expired at" if end <= datetime.now(UTC) else "valid until"
        notes.append(f"one {state} {end:%Y-%m-%d %H:%M:%S} UTC")
    return f" ({', '.join(notes)})"


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    principal_id: str
    scopes: tuple[str, ...]
    groups: tuple[str, ...] = ()
    expires: float = float("inf")  # time.time() from which the key is refused (a rotated-out key)


class KeyAccessToken(AccessToken):
    """A verified API key: the holder's groups travel with it (policies read them)."""

    groups: list[str] = Field(default_factory=list)


class ApiKeyVerifier:
    """The SDK's TokenVerifier for API keys: the key's SHA-256 digest looks up its entry.

    A lookup by digest costs the same with 1 key or 10,000 (a loop over every key cost 75 % more CPU per
    call at 10,000), and its timing reveals nothing: an attacker cannot steer the digest of what they send.
    """

    def __init__(self, tool_keys: list[KeyEntry], admin_keys: list[KeyEntry]) -> None:
        keys = [
            _Key(k.digest, k.principal_id, tuple(sorted(k.scopes)), tuple(sorted(k.groups)), _ends(k))
            for k in tool_keys
        ]
        # Admin keys read /security/events and nothing else (parse_keys refuses scopes on them); listed
        # last, so a digest configured as both is an admin key, as it always was.
        keys += [_Key(k.digest, k.principal_id, (ADMIN_SCOPE,), expires=_ends(k)) for k in admin_keys]
        self._by_digest = {key.digest: key for key in keys}

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    async def verify_token(self, token: str) -> AccessToken | None:
        if len(token) > 512:
            return None
        candidate = hashlib.sha256(token.encode()).digest()
        found = self._by_digest.get(candidate)
        if found is None or not hmac.compare_digest(candidate, found.digest):
            return None
        if time.time() >= found.expires:
            return None  # a rotated-out key whose grace has ended: refused as any unknown key
        # The key itself is not kept on the token: the name (or the digest's fingerprint) names the caller,
        # and its scopes become the principal's, as an OAuth token's do.
        return KeyAccessToken(
            token="",  # nosec B106
            client_id=found.principal_id,
            scopes=list(found.scopes),
            groups=list(found.groups),
        )


def _ends(key: KeyEntry) -> float:
    return key.expires.timestamp() if key.expires else float("inf")
