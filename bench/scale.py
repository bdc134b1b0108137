"""What one served tools/call costs as the work grows: rows in the audit trail, API keys, open sessions.

    uv run python bench/scale.py              # full sizes: about 11 minutes on 2 cores; needs wrk
    uv run python bench/scale.py --quick      # rows 0,10k; keys 1,100; sessions 0,50; 1 round of 1 s
    uv run python bench/scale.py --curves sessions --sessions 0,1000 --no-write

Three curves (issue 28, "Size"), x = the amount of work, y = server CPU per call, latency, RSS; in each,
one server per point, all started before the rounds and measured in interleaved rounds (each round
starts at the next point), medians reported, with bench/run.py's machinery (its rendered project and
venv, wrk with bench/mcp.lua, server CPU from psutil):
1. rows stored in the SQLite audit trail (--rows, default 0,100000,1000000): the file is filled before
   the server starts (1 event in 1,000 of severity high, 1 in 7 an authorization_denied, one per
   millisecond, all within retention; rows from before the hash chain, as a file that predates it),
   then served twice: below its row cap, and at it (MCP_SECURITY_EVENTS_MAX_ROWS = the rows, so
   pruning runs every 1,000 events). tools/call at 1 and 8 connections; at the largest size also with
   an admin polling filtered pages of GET /security/events every 200 ms during the load; and the
   latency of those pages with the server idle. The pages: `severity=high` as the issue wrote it
   (oldest first, the API's default), the same newest first (limit 100), and
   `event=authorization_denied&since=<a minute before the servers started>` (oldest first: no filled
   row matches, so the page reads its whole bound of 10,000 rows and hands back a cursor).
2. API keys configured (--keys, default 1,1000,10000; named digests `user-N:sha256:<hex>` in
   MCP_API_KEYS, the caller's the last one), and --raw-keys (default 1,000 keygen keys stored raw,
   `user-N:mcp_...`, each measured for strength at start-up and each a secret the redactor looks for):
   server start-up (wall and CPU to the first /health answer, --starts of them), RSS, and tools/call.
   10,000 entries do not fit in one environment variable (Linux: 128 KiB), so each server runs from a
   directory of its own whose .env holds MCP_API_KEYS (the project's other files linked into it).
3. idle sessions held open (--sessions, default 0,100,1000; `initialize` then
   `notifications/initialized`, as an initialize-era client opens one, all by the caller's key): RSS
   with them, and tools/call in one more session at 1 and 8 connections (p50, p99, and the slowest
   call, where a full collection of the garbage collector would show). Beside it, the RSS of
   --replay-buffers full 256 KiB replay buffers in one process of the servers' Python (filled with
   small, medium and large answers in turn): what one full buffer costs against its setting.
   (Filling each served session's buffer would need a tool that streams; the sample tools do not.)

Latency is wrk's, which corrects for coordinated omission: a server stalled for 100 ms counts as the
calls it would have answered meanwhile, so one stall per 5 s run moves p99 (that is how a full collection
of the cycle collector shows, beside the max).

Full size, estimated on a 2-core machine (AMD EPYC, from a --quick run and a 1,000-session probe): rows
about 5 minutes (filling 1M rows ~15 s, 5 servers x 2 levels plus 4 polled cells, 3 rounds of 5 s),
keys about 3.5 minutes (4 servers x 2 levels x 3 rounds of 5 s, 3 timed starts each; 1,000 raw keys
take ~13 s of CPU to start), sessions about 2 minutes (1,000 sessions open in ~4 s); about 11 minutes
in all with rendering and installing. --quick: about 1.5 minutes.

Figures are printed and written to docs/benchmarks.md, "## Cost as the work grows (bench/scale.py)",
unless --no-write. Uses the same bench/results/ as bench/run.py: do not run both at once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from limiter_support import write_section
from run import (
    CALL,
    HEADERS,
    INITIALIZE,
    RESULTS,
    Target,
    check_answers,
    client_key,
    cpu_seconds,
    machine,
    open_session,
    prepare,
    read_env_file,
    remove_database,
    start_with_own_audit,
    stop_targets,
    wrk,
)
from support import Venv, package_of, start_server

SECTION = "Cost as the work grows (bench/scale.py)"
LEVELS = (1, 8)
SCRATCH = RESULTS / "scale"
POLL_SECONDS = 0.2
REPLAY_SETTING = 262_144  # MCP_SESSION_REPLAY_BYTES' default
Key = tuple[str, int, bool]  # (point, connections, an admin polling meanwhile)

# Run by the servers' Python: the schema is the rendered store's own, then the rows, then its upgrade
# (the class index; the hash chain starts after these rows, as in a file written before the chain).
FILL = """
import importlib, json, sqlite3, sys
from datetime import UTC, datetime, timedelta
package, path, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
layout = importlib.import_module(package + ".security.audit.event_stores.sqlite_layout")
start = datetime.now(UTC) - timedelta(milliseconds=rows, minutes=1)
details = json.dumps({"outcome": "ok", "duration_ms": 1})
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.executescript(layout.SCHEMA)
db.execute("BEGIN")
db.executemany(
    "INSERT INTO security_events (id, timestamp, event, severity, severity_rank, identifier, tool,"
    " request_id, details, anonymous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
    (
        (
            "e%d" % n,
            (start + timedelta(milliseconds=n)).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "tool_called" if n % 7 else "authorization_denied",
            "high" if n % 1000 == 0 else "low",
            2 if n % 1000 == 0 else 0,
            "key:user-%d" % (n % 50),
            "whoami",
            str(n),
            details,
        )
        for n in range(rows)
    ),
)
db.execute("COMMIT")
layout.upgrade(db)
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
db.close()
"""
# Run by the servers' Python: RSS growth per full replay buffer, messages of three sizes in turn.
REPLAY = """
import asyncio, gc, importlib, os, sys
from mcp_types import JSONRPCResponse
package, count, setting = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SessionReplay = importlib.import_module(package + ".transport.http.session_manager").SessionReplay
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
async def main():
    buffers = []
    gc.collect()
    before = rss()
    for n in range(count):
        size = (50, 400, 4000)[n % 3]
        store = SessionReplay(setting)
        for number in range(2 * setting // size + 10):  # more than it keeps: full, and evicting
            text = "x" * (size - 6) + "%06d" % (number % 1_000_000)
            result = {"content": [{"type": "text", "text": text}], "isError": False}
            await store.store_event("1", JSONRPCResponse(jsonrpc="2.0", id=number, result=result))
        buffers.append(store)
    gc.collect()
    print((rss() - before) / count)
asyncio.run(main())
"""


@dataclass
class Cell:
    """wrk results of one point at one concurrency, one entry per round; the admin's page latencies."""

    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    max_ms: list[float] = field(default_factory=list)
    failures: int = 0
    polls: dict[str, list[float]] = field(default_factory=dict)
    poll_errors: int = 0

    def add(self, data: dict[str, float]) -> None:
        self.rps.append(data["requests"] / data["seconds"])
        self.cpu_us.append(data["cpu_us_per_request"])
        self.p50_ms.append(data["p50_us"] / 1000)
        self.p99_ms.append(data["p99_us"] / 1000)
        self.max_ms.append(data.get("max_us", float("nan")) / 1000)
        self.failures += int(data["failures"] + data["socket_errors"])

    def med(self, name: str) -> float:
        values: list[float] = getattr(self, name)
        return statistics.median(values) if values else float("nan")

    def row(self) -> str:
        """`req/s | CPU µs | p50 | p99 | max | failures` cells of a Markdown table."""
        return (
            f"{self.med('rps'):,.0f} | {self.med('cpu_us'):,.0f} | {self.med('p50_ms'):.2f} | "
            f"{self.med('p99_ms'):.2f} | {self.med('max_ms'):.1f} | {self.failures}"
        )


def rss_mb(target: Target) -> float:
    import psutil

    return float(psutil.Process(target.process.pid).memory_info().rss) / 1_048_576


def admin_auth(env: dict[str, str]) -> str:
    first = env["MCP_ADMIN_API_KEYS"].split(",")[0].strip()
    return "Bearer " + (first.rpartition(":")[2] if ":mcp_" in first else first)


# ---- rounds -----------------------------------------------------------------------------------


class Poller(threading.Thread):
    """An admin reading filtered pages of GET /security/events, one each POLL_SECONDS, queries in turn."""

    def __init__(self, target: Target, auth: str, queries: dict[str, dict[str, str]]) -> None:
        super().__init__(daemon=True)
        self.target, self.auth, self.queries = target, auth, queries
        self.latencies: dict[str, list[float]] = {name: [] for name in queries}
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        import httpx2

        base = f"http://127.0.0.1:{self.target.port}"
        with httpx2.Client(base_url=base, headers={"Authorization": self.auth}, timeout=30) as client:
            due = time.monotonic()
            for name in itertools.cycle(self.queries):
                if self.halt.is_set():
                    return
                began = time.perf_counter()
                response = client.get("/security/events", params=self.queries[name])
                self.latencies[name].append((time.perf_counter() - began) * 1000)
                self.errors += response.status_code != 200
                due += POLL_SECONDS
                self.halt.wait(max(0.0, due - time.monotonic()))


@contextlib.contextmanager
def polling(target: Target, auth: str, queries: dict[str, dict[str, str]]) -> Iterator[Poller]:
    poller = Poller(target, auth, queries)
    poller.start()
    try:
        yield poller
    finally:
        poller.halt.set()
        poller.join(timeout=60)


def interleaved(
    targets: dict[str, Target],
    keys: list[Key],
    rounds: int,
    seconds: float,
    poll: Callable[[Target], contextlib.AbstractContextManager[Poller]] | None = None,
) -> dict[Key, Cell]:
    """tools/call through wrk for every (point, connections, polled) in `keys`, rounds interleaved."""
    cells: dict[Key, Cell] = {key: Cell() for key in keys}
    for target in targets.values():  # warm up: imports, caches, first SQLite writes
        wrk(target, CALL, 4, 1)
    for number in range(rounds):
        shift = number % len(keys)
        for key in keys[shift:] + keys[:shift]:
            name, connections, polled = key
            target, cell = targets[name], cells[key]
            with poll(target) if polled and poll else contextlib.nullcontext() as poller:
                cell.add(wrk(target, CALL, connections, seconds))
            if poller is not None:
                for query, latencies in poller.latencies.items():
                    cell.polls.setdefault(query, []).extend(latencies)
                cell.poll_errors += poller.errors
            print(
                f"  round {number + 1}/{rounds} c={connections} {name}{' + admin polling' * polled}: "
                f"{cell.rps[-1]:,.0f} req/s, {cell.cpu_us[-1]:,.0f} us CPU/req, p50 {cell.p50_ms[-1]:.2f} "
                f"p99 {cell.p99_ms[-1]:.2f} max {cell.max_ms[-1]:.1f} ms",
                flush=True,
            )
    return cells


# ---- 1. rows stored ---------------------------------------------------------------------------


def fill(venv: Venv, project: Path, rows: int) -> Path:
    """A store file holding `rows` events, written by the servers' Python with the rendered schema."""
    path = SCRATCH / f"filled-{rows}.db"
    remove_database(path)
    began = time.perf_counter()
    package = package_of(project)[1]
    subprocess.run([venv.python, "-c", FILL, package, str(path), str(rows)], check=True, timeout=1800)
    print(f"  filled {rows:,} rows in {time.perf_counter() - began:.1f} s", flush=True)
    return path


def row_points(sizes: list[int]) -> list[tuple[str, int, int]]:
    """(point, rows, cap): each size below its cap and at it; 0 rows once, at the default cap."""
    points = []
    for rows in sizes:
        if rows == 0:
            points.append(("0 rows", 0, 1_000_000))
            continue
        points.append((f"{rows:,} rows, below the cap", rows, 10 * rows + 1_000_000))
        points.append((f"{rows:,} rows, at the cap", rows, max(rows, 1_000)))
    return points


def event_queries(since: datetime) -> dict[str, dict[str, str]]:
    """The filtered pages an admin reads: `severity=high` as written (oldest first, the default) and
    newest first, and `event` + `since` (the last minute)."""
    moment = since.isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "severity=high": {"severity": "high"},
        "severity=high&order=desc": {"severity": "high", "order": "desc", "limit": "100"},
        "event=authorization_denied&since=": {"event": "authorization_denied", "since": moment},
    }


def idle_queries(
    target: Target, auth: str, queries: dict[str, dict[str, str]], count: int
) -> dict[str, list[float]]:
    import httpx2

    """Milliseconds per page, each query `count` times after one untimed round (connection, caches)."""
    latencies: dict[str, list[float]] = {name: [] for name in queries}
    with httpx2.Client(base_url=f"http://127.0.0.1:{target.port}", headers={"Authorization": auth}) as client:
        for round_no in range(count + 1):
            for name, params in queries.items():
                began = time.perf_counter()
                response = client.get("/security/events", params=params, timeout=30)
                if round_no:
                    latencies[name].append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{target.name}: GET /security/events {params}: {response.status_code}"
                    )
    return latencies


def rows_curve(venv: Venv, project: Path, args: argparse.Namespace) -> str:
    env = base_env(project)
    auth = admin_auth(env)
    points = row_points(args.rows)
    filled = {rows: fill(venv, project, rows) for rows in {rows for _, rows, _ in points if rows}}
    targets: dict[str, Target] = {}
    try:
        for name, rows, cap in points:
            path = SCRATCH / f"rows-{len(targets)}.db"
            remove_database(path)
            if rows:
                shutil.copyfile(filled[rows], path)
            settings = {
                "MCP_SECURITY_EVENTS_URL": f"sqlite:///{path}",
                "MCP_SECURITY_EVENTS_MAX_ROWS": str(cap),
            }
            server = start_server(venv, project, {**env, **settings}, log_dir=RESULTS / "logs")
            targets[name] = Target(name, server.port, server.process, auth=f"Bearer {client_key(env)}")
        check_answers(targets)
        queries = event_queries(datetime.now(UTC) - timedelta(minutes=1))
        idle = {
            name: idle_queries(target, auth, queries, args.query_repeats) for name, target in targets.items()
        }
        largest = [name for name, rows, _ in points if rows == max(args.rows)]
        keys = [(name, c, False) for name, _, _ in points for c in LEVELS]
        keys += [(name, c, True) for name in largest if max(args.rows) for c in LEVELS]
        cells = interleaved(
            targets, keys, args.rounds, args.seconds, lambda target: polling(target, auth, queries)
        )
        rss = {name: rss_mb(target) for name, target in targets.items()}
    finally:
        stop_targets(targets)
    return rows_report(points, cells, idle, rss, largest)


def rows_report(
    points: list[tuple[str, int, int]],
    cells: dict[Key, Cell],
    idle: dict[str, dict[str, list[float]]],
    rss: dict[str, float],
    largest: list[str],
) -> str:
    lines = [
        "### Rows stored in the audit trail",
        "",
        "| rows stored | row cap | admin polling | connections | req/s | server CPU µs/call | p50 ms | "
        "p99 ms | max ms | failures |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, connections, polled), cell in cells.items():
        _, rows, cap = next(point for point in points if point[0] == name)
        lines.append(f"| {rows:,} | {cap:,} | {'yes' if polled else 'no'} | {connections} | {cell.row()} |")
    lines += [
        "",
        "Server RSS after the rounds: " + "; ".join(f"{n}: {mb:.0f} MB" for n, mb in rss.items()) + ".",
    ]
    lines += [
        "",
        "Filtered pages of GET /security/events (ms, as the admin's client sees them: HTTP included):",
        "",
    ]
    lines += ["| rows stored | query | idle median | idle max | under load median | under load max |"]
    lines += ["|---|---|---|---|---|---|"]
    for name, by_query in idle.items():
        loaded = [cell for (point, _, polled), cell in cells.items() if point == name and polled]
        for query, latencies in by_query.items():
            under = [ms for cell in loaded for ms in cell.polls.get(query, [])]
            busy = f"{statistics.median(under):.1f} | {max(under):.1f}" if under else "- | -"
            lines.append(
                f"| {name} | `{query}` | {statistics.median(latencies):.1f} | {max(latencies):.1f} | {busy} |"
            )
    lines += ["", *rows_targets(cells, idle, largest)]
    return "\n".join(lines)


def rows_targets(
    cells: dict[Key, Cell], idle: dict[str, dict[str, list[float]]], largest: list[str]
) -> list[str]:
    """Issue 28's targets at the largest size, in req/s and in requests per CPU-second (the inverse of
    the server's CPU per call: less moved by what else runs on the machine)."""
    lines = ["| target (issue 28) | reached | target | |", "|---|---|---|---|"]
    empty = {c: cells[("0 rows", c, False)] for c in LEVELS if ("0 rows", c, False) in cells}
    for name in largest:
        if len(empty) < len(LEVELS) or name == "0 rows":
            break
        for connections in LEVELS:
            alone, polled = cells[(name, connections, False)], cells[(name, connections, True)]
            compared = (
                (name, alone, "0 rows", empty[connections]),
                (f"{name} + admin polling", polled, "alone", alone),
            )
            for label, cell, against, base in compared:
                for measure, ratio in (
                    ("req/s", cell.med("rps") / base.med("rps")),
                    ("requests per CPU-second", base.med("cpu_us") / cell.med("cpu_us")),
                ):
                    text = f"{label}: tools/call {measure} / {against}, {connections} conn."
                    lines.append(verdict(text, ratio, 0.9, True))
        p99 = cells[(name, 1, False)].med("p99_ms") / empty[1].med("p99_ms")
        lines.append(verdict(f"{name}: tools/call p99 / 0 rows, 1 conn.", p99, 1.1, False))
        worst = max(max(ms) for ms in idle[name].values())
        lines.append(verdict(f"{name}: slowest filtered page, idle (ms)", worst, 20, False))
        under = [ms for c in LEVELS for lat in cells[(name, c, True)].polls.values() for ms in lat]
        if under:
            lines.append(
                verdict(f"{name}: median filtered page under load (ms)", statistics.median(under), 20, False)
            )
    return lines


def verdict(label: str, value: float, target: float, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return f"| {label} | {value:.2f} | {sign} {target} | {'met' if met else 'NOT MET'} |"


# ---- 2. keys configured -----------------------------------------------------------------------


def key_entries(count: int, raw: bool) -> tuple[str, str]:
    """(MCP_API_KEYS, the caller's key): `count` named entries, the caller's the last."""
    caller = "mcp_" + secrets.token_urlsafe(32)

    def entry(name: str, key: str | None) -> str:
        if raw:
            return f"{name}:{key or 'mcp_' + secrets.token_urlsafe(32)}"
        digest = hashlib.sha256(key.encode()).hexdigest() if key else secrets.token_hex(32)
        return f"{name}:sha256:{digest}"

    return ",".join([*(entry(f"user-{n}", None) for n in range(count - 1)), entry("bench", caller)]), caller


def keyed_directory(project: Path, name: str, keys: str) -> Path:
    """The project seen from a directory of its own whose .env holds MCP_API_KEYS."""
    directory = SCRATCH / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for entry in project.iterdir():
        if entry.name != ".env":
            (directory / entry.name).symlink_to(entry)
    (directory / ".env").write_text(f"MCP_API_KEYS={keys}\n", encoding="utf-8")
    return directory


def timed_start(
    venv: Venv, directory: Path, env: dict[str, str], database: str
) -> tuple[Target, float, float]:
    """(the server, wall seconds to its first /health answer, CPU seconds it used up to then). A fresh
    audit file of its own, as start_with_own_audit gives, and more time to start: 1,000 raw keys are
    measured for strength one by one (~10 ms each)."""
    path = RESULTS / database
    remove_database(path)
    began = time.perf_counter()
    server = start_server(
        venv,
        directory,
        {**env, "MCP_SECURITY_EVENTS_URL": f"sqlite:///{path}"},
        log_dir=RESULTS / "logs",
        ready_kwargs={"timeout": 300},
    )
    wall = time.perf_counter() - began
    return Target(directory.name, server.port, server.process), wall, cpu_seconds(server.process)


def keys_curve(venv: Venv, project: Path, args: argparse.Namespace) -> str:
    env = {k: v for k, v in base_env(project).items() if k != "MCP_API_KEYS"}
    points = [(f"{n:,} digest{'s' * (n != 1)}", n, False) for n in args.keys]
    points += [(f"{n:,} raw key{'s' * (n != 1)}", n, True) for n in args.raw_keys]
    targets: dict[str, Target] = {}
    starts: dict[str, list[tuple[float, float]]] = {}
    try:
        directories = {}
        for index, (name, count, raw) in enumerate(points):
            keys, caller = key_entries(count, raw)
            directories[name] = keyed_directory(project, f"keys-{index}", keys)
            target, wall, cpu = timed_start(venv, directories[name], env, f"scale-keys-{index}.db")
            target.name, target.auth = name, f"Bearer {caller}"
            targets[name], starts[name] = target, [(wall, cpu)]
            print(f"  {name}: started in {wall:.2f} s ({cpu:.2f} s CPU), {rss_mb(target):.0f} MB", flush=True)
        for _ in range(args.starts - 1):  # more starts, interleaved, each stopped at once
            for index, (name, _, _) in enumerate(points):
                extra, wall, cpu = timed_start(venv, directories[name], env, f"scale-keys-start-{index}.db")
                stop_targets({name: extra})
                starts[name].append((wall, cpu))
        started_rss = {name: rss_mb(target) for name, target in targets.items()}
        check_answers(targets)
        cells = interleaved(
            targets, [(name, c, False) for name, _, _ in points for c in LEVELS], args.rounds, args.seconds
        )
        rss = {name: rss_mb(target) for name, target in targets.items()}
    finally:
        stop_targets(targets)
    return keys_report(points, cells, starts, started_rss, rss)


def keys_report(
    points: list[tuple[str, int, bool]],
    cells: dict[Key, Cell],
    starts: dict[str, list[tuple[float, float]]],
    started_rss: dict[str, float],
    rss: dict[str, float],
) -> str:
    lines = [
        "### API keys configured",
        "",
        "| keys | start-up s (wall) | start-up s (CPU) | RSS MB started / after | connections | req/s | "
        "server CPU µs/call | p50 ms | p99 ms | max ms | failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _, _ in points:
        wall = statistics.median(w for w, _ in starts[name])
        cpu = statistics.median(c for _, c in starts[name])
        for connections in LEVELS:
            lines.append(
                f"| {name} | {wall:.2f} | {cpu:.2f} | {started_rss[name]:.0f} / {rss[name]:.0f} "
                f"| {connections} | {cells[(name, connections, False)].row()} |"
            )
    lines += ["", "| target (issue 28) | reached | target | |", "|---|---|---|---|"]
    digests = [name for name, _, raw in points if not raw]
    if len(digests) > 1:
        one, most = digests[0], digests[-1]
        for connections in LEVELS:
            ratio = cells[(most, connections, False)].med("cpu_us") / cells[(one, connections, False)].med(
                "cpu_us"
            )
            lines.append(verdict(f"{most} / {one}: CPU per call, {connections} conn.", ratio, 1.1, False))
    return "\n".join(lines)


# ---- 3. sessions open -------------------------------------------------------------------------


def open_idle_sessions(target: Target, count: int) -> None:
    """`count` sessions opened as an initialize-era client opens one, then left alone."""
    import httpx2

    headers = {**HEADERS, "Authorization": target.auth}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    with httpx2.Client(headers=headers, timeout=30) as client:
        for _ in range(count):
            response = client.post(target.url, json=INITIALIZE)
            session = response.headers.get("mcp-session-id")
            if response.status_code != 200 or not session:
                raise RuntimeError(
                    f"{target.name}: session not opened: {response.status_code} {response.text[:200]}"
                )
            client.post(target.url, json=initialized, headers={"Mcp-Session-Id": session})


def replay_buffer_bytes(venv: Venv, project: Path, count: int) -> float:
    package = package_of(project)[1]
    done = subprocess.run(
        [venv.python, "-c", REPLAY, package, str(count), str(REPLAY_SETTING)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        cwd=project,
    )
    return float(done.stdout.split()[-1])


def sessions_curve(venv: Venv, project: Path, args: argparse.Namespace) -> str:
    env = base_env(project)
    targets: dict[str, Target] = {}
    rss: dict[str, tuple[float, float, float]] = {}  # before the sessions, with them, after the rounds
    try:
        for count in args.sessions:
            name = f"{count:,} sessions"
            limits = {
                "MCP_MAX_SESSIONS": str(max(1_000, count + 10)),
                "MCP_MAX_SESSIONS_PER_PRINCIPAL": str(count + 10),
            }
            server = start_with_own_audit(venv, project, {**env, **limits}, f"scale-sessions-{count}.db")
            target = Target(name, server.port, server.process, auth=f"Bearer {client_key(env)}")
            wrk(target, CALL, 4, 1)  # warm, so that RSS before and after differ by the sessions
            before = rss_mb(target)
            began = time.perf_counter()
            open_idle_sessions(target, count)
            print(f"  {name}: opened in {time.perf_counter() - began:.1f} s", flush=True)
            rss[name] = (before, rss_mb(target), 0.0)
            open_session(target)  # the one the calls go through
            targets[name] = target
        check_answers(targets)
        keys = [(name, c, False) for name in targets for c in LEVELS]
        cells = interleaved(targets, keys, args.rounds, args.seconds)
        rss = {name: (*rss[name][:2], rss_mb(target)) for name, target in targets.items()}
    finally:
        stop_targets(targets)
    buffer = replay_buffer_bytes(venv, project, args.replay_buffers)
    return sessions_report(args.sessions, cells, rss, buffer, args.replay_buffers)


def sessions_report(
    counts: list[int],
    cells: dict[Key, Cell],
    rss: dict[str, tuple[float, float, float]],
    buffer: float,
    buffers: int,
) -> str:
    lines = [
        "### Idle sessions open",
        "",
        "| sessions | RSS MB before / with them / after the rounds | RSS per session KB | connections "
        "| req/s | server CPU µs/call | p50 ms | p99 ms | max ms | failures |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for count in counts:
        name = f"{count:,} sessions"
        before, held, after = rss[name]
        per = f"{(held - before) * 1024 / count:.0f}" if count else "-"
        for connections in LEVELS:
            lines.append(
                f"| {count:,} | {before:.0f} / {held:.0f} / {after:.0f} | {per} | {connections} "
                f"| {cells[(name, connections, False)].row()} |"
            )
    ratio = buffer / REPLAY_SETTING
    lines += [
        "",
        f"A full replay buffer ({REPLAY_SETTING // 1024} KiB setting; {buffers} buffers filled in one "
        f"process of the servers' Python, answers of 50, 400 and 4,000 bytes in turn): "
        f"{buffer / 1024:,.0f} KiB of RSS each.",
        "",
        "| target (issue 28) | reached | target | |",
        "|---|---|---|---|",
    ]
    if len(counts) > 1 and counts[0] == 0:
        most, none = f"{counts[-1]:,} sessions", "0 sessions"
        p99 = cells[(most, 1, False)].med("p99_ms") / cells[(none, 1, False)].med("p99_ms")
        lines.append(verdict(f"p99 in a session, {most} / none, 1 conn.", p99, 2.0, False))
    lines.append(verdict("RSS of a full replay buffer / its setting", ratio, 1.5, False))
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------


def base_env(project: Path) -> dict[str, str]:
    """bench/run.py's "template" settings: rate limits on, checked on every request, never reached."""
    env = read_env_file(project)
    env.update(MCP_RATE_LIMIT="10000/second", MCP_TRUSTED_ORIGINS="https://app.example.com")
    return env


def command_options(args: argparse.Namespace) -> str:
    """The options that changed what was measured, as the command line gave them (sizes and runs)."""
    return "".join(
        f" {option}" for option in sys.argv[1:] if option not in ("--quick", "--no-write", "--no-priority")
    )


def sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


# (full size, --quick) of each option: --quick sets what the command line leaves unset.
SIZES: dict[str, tuple[object, object]] = {
    "rows": ([0, 100_000, 1_000_000], [0, 10_000]),
    "keys": ([1, 1_000, 10_000], [1, 100]),
    "raw_keys": ([1_000], [20]),
    "sessions": ([0, 100, 1_000], [0, 50]),
    "rounds": (3, 1),
    "seconds": (5, 1),
    "starts": (3, 1),
    "query_repeats": (10, 3),
    "replay_buffers": (60, 6),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round of 1 s: a smoke check")
    parser.add_argument("--curves", default="rows,keys,sessions", help="which curves, comma-separated")
    parser.add_argument("--rows", type=sizes, help="rows stored (default 0,100000,1000000)")
    parser.add_argument("--keys", type=sizes, help="digest entries (default 1,1000,10000)")
    parser.add_argument("--raw-keys", type=sizes, help="raw key entries (default 1000)")
    parser.add_argument("--sessions", type=sizes, help="idle sessions (default 0,100,1000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (default 5)")
    parser.add_argument("--starts", type=int, help="server starts timed per key count (default 3)")
    parser.add_argument("--query-repeats", type=int, help="idle filtered pages per query (default 10)")
    parser.add_argument("--replay-buffers", type=int, help="full replay buffers measured (default 60)")
    parser.add_argument("--no-priority", action="store_true", help="do not raise the priority (nice -10)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    for name, (full, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main() -> None:
    args = parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("bench/scale.py needs wrk: apt-get install wrk")
    priority = False
    if not args.no_priority:
        with contextlib.suppress(PermissionError):
            os.nice(-10)
            priority = True
    began = time.perf_counter()
    print("rendering and installing the project ...", flush=True)
    venv, project = prepare()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (RESULTS / "logs").mkdir(exist_ok=True)
    curves = {"rows": rows_curve, "keys": keys_curve, "sessions": sessions_curve}
    parts, took = [], []
    for name in args.curves.split(","):
        print(f"{name} ...", flush=True)
        started = time.perf_counter()
        parts.append(curves[name.strip()](venv, project, args))
        took.append(f"{name} {time.perf_counter() - started:.0f} s")
    body = "\n\n".join(
        [
            f"`uv run python bench/scale.py{' --quick' if args.quick else ''}{command_options(args)}` "
            f"({datetime.now(UTC):%Y-%m-%d %H:%M UTC}; took {time.perf_counter() - began:.0f} s: "
            f"{', '.join(took)}). Machine: {machine()}",
            f"x = the amount of work, y = what one tools/call (`whoami`) costs the server: bench/run.py's "
            f"**template** server (every protection on, audit trail to SQLite), one per point, driven by "
            f"wrk; "
            f"{args.rounds} interleaved round(s) of {args.seconds:g} s per cell, medians; max is the slowest "
            f"call of a run (a full garbage collection shows there first)"
            f"{'; everything at nice -10' if priority else ''}. The script's docstring says how each "
            f"point is made.",
            *parts,
        ]
    )
    print()
    print(body)
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
