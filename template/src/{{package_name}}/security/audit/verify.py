"""`audit verify`: walk the hash chains of a stored audit trail (chain.py), reading only.

The SQLite file is opened read-only and Redis is only read: verifying never changes the trail.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from .chain import CHAINS, ChainReport, Head, Link, check_heads, row_material, walk

_BATCH = 1_000


class VerifyError(ValueError):
    """The trail named cannot be read (no such file, Redis not reachable, a store without a chain)."""


def verify(
    url: str, heads: Iterable[Head] = (), *, tail: int | None = None, untouched: bool = False
) -> tuple[list[ChainReport], str | None]:
    """Each chain's report, and the first problem found (None: every link holds and every head is in).

    `tail`: check only the newest `tail` events of each chain (the security report's quick look).
    `untouched`: leave even the SQLite file's shared-memory index alone (`check` changes no file): the
    file is read as of its last checkpoint, without what the WAL holds since.
    """
    heads = list(heads)
    if url.startswith("sqlite:///"):
        reports = _sqlite(url.removeprefix("sqlite:///"), heads, tail, untouched=untouched)
    elif url.startswith(("redis://", "rediss://")):
        reports = _redis(url, heads, tail)
    else:
        raise VerifyError(
            f"cannot verify {url.split(':', 1)[0]}:// trails: only sqlite:///path and redis:// stores keep a "
            "hash chain (the memory store ends with the process)"
        )
    for report in reports:
        if report.problem:
            return reports, f"chain {report.chain!r}: {report.problem}"
    problem = check_heads({report.chain: report for report in reports}, heads) if tail is None else None
    return reports, problem


def _sqlite(path: str, heads: list[Head], tail: int | None, *, untouched: bool) -> list[ChainReport]:
    if not Path(path).is_file():
        raise VerifyError(f"{path}: no such audit file; name the file MCP_SECURITY_EVENTS_URL points at")
    try:
        db = sqlite3.connect(f"file:{quote(path)}?mode=ro{'&immutable=1' if untouched else ''}", uri=True)
        try:
            return _sqlite_reports(db, heads, tail)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise VerifyError(f"{path}: cannot read the audit file ({type(exc).__name__}: {exc})") from None


_ROWS = (
    "SELECT seq, id, timestamp, event, severity, identifier, tool, request_id, details, anonymous, prev, hash"
    " FROM security_events WHERE anonymous = :class"
)
_ALL = _ROWS + " ORDER BY seq"
_NEWEST = (
    "SELECT * FROM (SELECT seq, id, timestamp, event, severity, identifier, tool, request_id, details,"
    " anonymous, prev, hash FROM security_events WHERE anonymous = :class ORDER BY seq DESC LIMIT :tail)"
    " ORDER BY seq"
)


def _sqlite_reports(db: sqlite3.Connection, heads: list[Head], tail: int | None) -> list[ChainReport]:
    columns = {row[1] for row in db.execute("PRAGMA table_info(security_events)")}
    if not columns:
        raise VerifyError("not an audit file: it has no security_events table")
    if not {"anonymous", "prev", "hash"} <= columns:  # a file no server of this version has opened yet
        (rows,) = db.execute("SELECT COUNT(*) FROM security_events").fetchone()
        return [ChainReport("events", unchained=rows), ChainReport("anonymous")]
    starts: dict[int, tuple[int, int | None, str | None]] = {}
    for anonymous, started, anchor_seq, anchor_hash in db.execute(
        "SELECT anonymous, started, anchor_seq, anchor_hash FROM security_events_chain"
    ):
        starts[anonymous] = (started, anchor_seq, anchor_hash)
    reports = []
    for anonymous, name in enumerate(CHAINS):
        started, anchor_seq, anchor_hash = starts.get(anonymous, (2**63 - 1, None, None))
        anchor = Head(name, str(anchor_seq), anchor_hash) if anchor_hash and not tail else None
        rows = db.execute(_NEWEST if tail else _ALL, {"class": anonymous, "tail": tail})
        links = (
            Link(str(row[0]), row[10], row[11], row_material(row[1:10]), required=row[0] >= started)
            for row in rows
        )
        reports.append(walk(name, links, anchor=anchor, heads=heads, tail=bool(tail)))
    return reports


def _redis(url: str, heads: list[Head], tail: int | None) -> list[ChainReport]:
    import redis
    from redis.exceptions import RedisError

    from .event_stores.redis import ANONYMOUS_STREAM, STREAM, _where, chain_key

    try:
        with redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=2.0) as client:
            reports = []
            for name, stream in zip(CHAINS, (STREAM, ANONYMOUS_STREAM), strict=True):
                state = {
                    key.decode(): value.decode() for key, value in client.hgetall(chain_key(stream)).items()
                }
                anchor = (
                    None if tail or "anchor" not in state else Head(name, state["anchor_id"], state["anchor"])
                )
                if "head_id" in state:  # the store's own record of its head: a naive cut is seen without one
                    heads.append(Head(name, state["head_id"], state["head"]))
                links = _stream_links(client, stream, state.get("start"), tail)
                reports.append(walk(name, links, anchor=anchor, heads=heads, tail=bool(tail)))
            return reports
    except (RedisError, OSError, ValueError) as exc:
        where = _where(url)
        raise VerifyError(f"cannot read the Redis audit store at {where} ({type(exc).__name__})") from None


def _stream_links(client: object, stream: str, start: str | None, tail: int | None) -> Iterator[Link]:
    from .event_stores.redis import _order

    started = _order(start) if start else None
    if tail:
        entries = list(reversed(client.xrevrange(stream, count=tail)))  # type: ignore[attr-defined]
        batches: Iterable[list[tuple[bytes, dict[bytes, bytes]]]] = [entries]
    else:
        batches = _batches(client, stream)
    for entries in batches:
        for raw_id, fields in entries:
            position = raw_id.decode()
            prev, digest = fields.get(b"p"), fields.get(b"h")
            yield Link(
                position,
                prev.decode() if prev else None,
                digest.decode() if digest else None,
                fields.get(b"e", b""),
                required=started is not None and _order(position) >= started,
            )


def _batches(client: object, stream: str) -> Iterator[list[tuple[bytes, dict[bytes, bytes]]]]:
    after = "-"
    while True:
        entries = client.xrange(stream, min=after, max="+", count=_BATCH)  # type: ignore[attr-defined]
        if not entries:
            return
        yield entries
        after = "(" + entries[-1][0].decode()


def heads_in_log(path: Path) -> list[Head]:
    """The newest head of each chain in a server log (its "audit_chain_head" lines)."""
    import json

    newest: dict[str, Head] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise VerifyError(f"--log {path}: cannot read it ({type(exc).__name__})") from None
    for line in lines:
        if '"audit_chain_head"' not in line:
            continue
        try:
            tokens = json.loads(line[line.index("{") :])["audit_chain_head"]
            for head in (Head.parse(token) for token in tokens):
                newest[head.chain] = head
        except (ValueError, KeyError, TypeError):
            continue  # not one of the server's lines
    return list(newest.values())


def print_verification(url: str, where: str, heads: list[Head]) -> int:
    """What `audit verify` prints; 0 when every link holds and every head given is in the chain."""
    reports, problem = verify(url, heads)
    print(f"audit trail: {where}")
    for report in reports:
        print(f"  {report.summary()}")
    for head in heads:
        print(f"  checked against the published head {head.token()}")
    if problem:
        print(f"BROKEN: {problem}")
        return 1
    print(
        "OK: every kept event links to the one before it"
        + (", and every head given is in it" if heads else "")
    )
    return 0
