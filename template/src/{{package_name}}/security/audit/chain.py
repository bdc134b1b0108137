"""The audit trail's hash chain: each stored event carries the hash of its predecessor in commit order.

An event's hash is SHA-256 over its predecessor's hash and the event exactly as stored, so an edited,
deleted or reordered event breaks the chain at that point. Each store keeps one chain per class of
events (principals' and anonymous ones, pruned apart); pruning records an anchor (the position and hash
of the last event it removed), so the kept events still verify. The head (the newest position and hash)
is published outside the store (the server log, the alert webhook): a chain cut short after it, or
rewritten up to it, no longer reaches it. What the chain cannot prove: see docs/security.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

GENESIS = "0" * 64  # the predecessor of a chain's first event
CHAINS = ("events", "anonymous")  # principals' events, and those of sources that have not authenticated


def link(prev: str, material: bytes) -> str:
    """The hash of an event stored as `material` after the event whose hash is `prev`."""
    return hashlib.sha256(prev.encode("ascii") + b"\n" + material).hexdigest()


def row_material(values: Iterable[object]) -> bytes:
    """The bytes hashed for a row of the SQLite store: its columns exactly as stored, in a fixed order."""
    # json's default encoder (made once, in C): separators or ensure_ascii of our own built one per call.
    return json.dumps(list(values)).encode("ascii")


@dataclass(frozen=True, slots=True)
class Link:
    """One stored event as the chain sees it: where it is, the hashes it carries, the bytes it hashes."""

    position: str
    prev: str | None  # None: the event carries no chain fields
    hash: str | None
    material: bytes
    required: bool = False  # the store's chain had started: the event must carry chain fields


@dataclass(frozen=True, slots=True)
class Head:
    chain: str
    position: str
    hash: str

    def token(self) -> str:
        """How the head is written in the log, and given back to `audit verify --head`."""
        return f"{self.chain}:{self.position}:{self.hash}"

    @classmethod
    def parse(cls, token: str) -> Head:
        chain, _, rest = token.partition(":")
        position, _, digest = rest.rpartition(":")
        if chain not in CHAINS or not position or len(digest) != 64:
            raise ValueError(
                f"--head {token[:80]!r}: expected <chain>:<position>:<sha256> as the server logs it "
                '(the "audit_chain_head" line), e.g. events:1234:9f86d08…'
            )
        return cls(chain, position, digest)


@dataclass
class ChainReport:
    """What walking one chain found: the first problem (if any) and the chain's state."""

    chain: str
    verified: int = 0
    unchained: int = 0  # events written before the store kept a chain
    first: str | None = None  # position of the first chained event kept
    unchained_before: str | None = None
    anchor: Head | None = None
    head: Head | None = None
    hashes: dict[str, str] = field(default_factory=dict)  # position -> hash of the published heads asked for
    problem: str | None = None

    def summary(self) -> str:
        if self.verified == 0 and self.unchained == 0:
            state = "empty"
        elif self.verified == 0:
            state = f"{self.unchained} events, none chained (written before the chain)"
        else:
            last = self.head.position if self.head else "?"
            state = f"{self.verified} events verified, event {self.first} to {last}"
            if self.head:
                state += f" (head {self.head.hash[:16]}…)"
        if self.problem:
            state += ", up to where it breaks"
        if self.unchained and self.verified:
            state += f"; not chained before event {self.unchained_before} ({self.unchained} older events)"
        if self.anchor:
            state += f"; pruned up to event {self.anchor.position} (anchor {self.anchor.hash[:16]}…)"
        return f"chain {self.chain!r}: {state}"


def walk(
    chain: str, links: Iterable[Link], *, anchor: Head | None, heads: Iterable[Head] = (), tail: bool = False
) -> ChainReport:
    """Check every link of one chain, oldest first; stop at the first problem and name it.

    `anchor`: the last event pruned (its hash is the first kept event's predecessor). Events without
    chain fields before the first chained one were written before the chain, not broken, unless their
    Link says the chain had started. `heads`: the published heads whose hashes check_heads needs.
    `tail`: the links are the newest few only; the first one's predecessor is taken as it is.
    """
    report = ChainReport(chain, anchor=anchor)
    wanted = {head.position for head in heads if head.chain == chain}
    expected = anchor.hash if anchor else GENESIS
    where = f"the anchor (event {anchor.position}, the last one pruned)" if anchor else "the chain's start"
    stream = _lookahead(links)
    for current, following in stream:
        if tail and report.verified == 0 and current.prev is not None:
            expected = current.prev
        if current.hash is None or current.prev is None:
            if report.verified or current.required:
                report.problem = f"event {current.position} was rewritten: its chain fields were removed"
                return report
            report.unchained += 1
            continue
        if report.verified == 0 and report.unchained:
            report.unchained_before = current.position
        if link(current.prev, current.material) != current.hash:
            report.problem = f"event {current.position} was rewritten: its content no longer matches its hash"
            return report
        if current.prev != expected:
            report.problem = _broken(current, following, expected, where)
            return report
        report.verified += 1
        report.first = report.first or current.position
        report.head = Head(chain, current.position, current.hash)
        if current.position in wanted:
            report.hashes[current.position] = current.hash
        expected, where = current.hash, f"event {current.position}"
    return report


def _broken(current: Link, following: Link | None, expected: str, where: str) -> str:
    if following is not None and current.prev == following.hash and following.prev == expected:
        return f"events {current.position} and {following.position} were reordered (each follows the other)"
    if current.prev == GENESIS:
        return f"the chain restarts at event {current.position}: the events before it were replaced"
    return (
        f"a gap before event {current.position}: the event it follows is missing "
        f"(deleted after {where}, or its hash was rewritten)"
    )


def check_heads(reports: dict[str, ChainReport], heads: Iterable[Head]) -> str | None:
    """The first published head that the stored chain no longer reaches (a truncated or rewritten tail)."""
    for head in heads:
        report = reports.get(head.chain)
        if report is None or report.problem:
            continue
        stored = report.hashes.get(head.position)
        if stored == head.hash:
            continue
        if stored is not None:
            return f"event {head.position} was rewritten: its hash is not the head published for it"
        if report.anchor and _not_after(head.position, report.anchor.position):
            continue  # pruned since it was published: the anchor vouches for what follows
        last = report.head.position if report.head else "nothing"
        return (
            f"the tail was truncated: chain {head.chain!r} ends at event {last}, "
            f"but the head published for event {head.position} is not in it"
        )
    return None


def _not_after(position: str, anchor: str) -> bool:
    return _order(position) <= _order(anchor)


def _order(position: str) -> tuple[int, ...]:
    return tuple(int(part) for part in position.replace("-", " ").split())


def _lookahead(links: Iterable[Link]) -> Iterator[tuple[Link, Link | None]]:
    iterator = iter(links)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        yield current, following
        current = following
