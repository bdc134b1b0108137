"""The peer comparison: the template with every protection on, against what else a team might run.

    uv run --group peers python bench/peers.py           # about 6 minutes; needs wrk
    uv run --group peers python bench/peers.py --quick   # a smoke check

Interleaved in one run, on one machine (rounds rotate the order, as bench/run.py does):
- template: the rendered project's `serve` as bench/run.py measures it (API key, CORS, security headers,
  Host/Origin checks, rate limits, audit trail to SQLite, metrics);
- fastmcp: FastMCP 4.2.3 with its bearer-token verifier, rate limiting, structured logging, error masking
  and Host protection (bench/peer_servers.py);
- sdk-default / sdk-stateless: the bare SDK server, both modes (bench/bare_server.py);
- starlette: one JSON route answering the same two messages, the ceiling of one Python process.
Figures are printed and written to docs/benchmarks.md, "## Peer comparison".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from limiter_support import write_section
from run import (
    BENCH,
    CALL,
    PING,
    RESULTS,
    Runs,
    Target,
    check_answers,
    client_key,
    free_port,
    machine,
    open_session,
    prepare,
    read_env_file,
    start_with_own_audit,
    stop_targets,
    wait_for_port,
    wrk,
)

NAMES = ("template", "fastmcp", "sdk-default", "sdk-stateless", "starlette")
LEVELS = (1, 8)


def spawn(name: str, python: str, script: Path, *args: str) -> Target:
    port = free_port()
    log = (RESULTS / "logs" / f"peer-{name}.log").open("wb")
    process = subprocess.Popen(
        [python, str(script), *args, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={key: value for key, value in os.environ.items() if not key.startswith(("MCP_", "FASTMCP_"))},
    )
    wait_for_port(port, process)
    return Target(name, port, process)


@contextlib.contextmanager
def peer_targets() -> Iterator[dict[str, Target]]:
    (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
    venv, project = prepare()
    env = read_env_file(project)
    env.update(MCP_RATE_LIMIT="10000/second", MCP_TRUSTED_ORIGINS="https://app.example.com")
    targets: dict[str, Target] = {}
    try:
        server = start_with_own_audit(venv, project, env, "events-peers.db")
        targets["template"] = Target("template", server.port, server.process, f"Bearer {client_key(env)}")
        token = secrets.token_urlsafe(32)
        targets["fastmcp"] = spawn(
            "fastmcp", sys.executable, BENCH / "peer_servers.py", "fastmcp", "--token", token
        )
        targets["fastmcp"].auth = f"Bearer {token}"
        for mode in ("default", "stateless"):
            bare = BENCH / "bare_server.py"
            targets[f"sdk-{mode}"] = spawn(f"sdk-{mode}", venv.python, bare, "http", "--mode", mode)
        targets["starlette"] = spawn("starlette", sys.executable, BENCH / "peer_servers.py", "starlette")
        open_session(targets["sdk-default"])
        check_answers(targets)
        yield targets
    finally:
        stop_targets(targets)


def measure(rounds: int, seconds: float) -> dict[tuple[str, str, int], Runs]:
    runs: dict[tuple[str, str, int], Runs] = {}
    with peer_targets() as targets:
        for target in targets.values():  # warm up: imports, caches, first SQLite writes
            for body in (PING, CALL):
                wrk(target, body, 4, 1)
        for round_no in range(rounds):
            order = NAMES[round_no % len(NAMES) :] + NAMES[: round_no % len(NAMES)]
            for method, body in (("ping", PING), ("tools/call", CALL)):
                for connections in LEVELS:
                    for name in order:
                        data = wrk(targets[name], body, connections, seconds)
                        entry = runs.setdefault((name, method, connections), Runs())
                        entry.rps.append(data["requests"] / data["seconds"])
                        entry.p99_ms.append(data["p99_us"] / 1000)
                        entry.cpu_us.append(data["cpu_us_per_request"])
                        entry.failures += int(data["failures"] + data["socket_errors"])
                        print(
                            f"  round {round_no + 1}/{rounds} {method:10} c={connections} {name:13} "
                            f"{entry.rps[-1]:8.0f} req/s  p99 {entry.p99_ms[-1]:6.2f} ms  "
                            f"cpu {entry.cpu_us[-1]:5.0f} us/req",
                            flush=True,
                        )
    return runs


def report(runs: dict[tuple[str, str, int], Runs], rounds: int, seconds: float) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    lines = [
        f"Machine: {machine()}",
        f"`uv run --group peers python bench/peers.py`: {rounds} interleaved rounds of {seconds:g} s per "
        "target, method and concurrency; medians. Requests per CPU-second is 10^6 / (server CPU µs per "
        "request): the figure a shared machine moves least.",
        "",
        "| method | conns | target | req/s | p99 ms | server CPU µs/req | req per CPU-second | failures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in ("ping", "tools/call"):
        for connections in LEVELS:
            for name in NAMES:
                entry = runs[(name, method, connections)]
                cpu = med(entry.cpu_us)
                lines.append(
                    f"| {method} | {connections} | {name} | {med(entry.rps):.0f} | {med(entry.p99_ms):.2f} | "
                    f"{cpu:.0f} | {1e6 / cpu:.0f} | {entry.failures} |"
                )
    lines += ["", "Template against FastMCP, tools/call (target: at least 4.5x, every protection on):", ""]
    for connections in LEVELS:
        ours, theirs = (
            runs[("template", "tools/call", connections)],
            runs[("fastmcp", "tools/call", connections)],
        )
        lines.append(
            f"- {connections} connection(s): {med(ours.rps) / med(theirs.rps):.2f}x the requests per second, "
            f"{med(theirs.cpu_us) / med(ours.cpu_us):.2f}x the requests per CPU-second"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--quick", action="store_true", help="one round of one second, for a smoke check")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1
    if not shutil.which("wrk"):
        sys.exit("bench/peers.py needs wrk: apt-get install wrk")
    try:
        import fastmcp  # noqa: F401 (only to say how to get it)
    except ImportError:
        sys.exit("bench/peers.py needs the peers group: uv run --group peers python bench/peers.py")
    runs = measure(args.rounds, args.seconds)
    section = report(runs, args.rounds, args.seconds)
    print(section)
    if not args.no_write:
        write_section("Peer comparison", section)


if __name__ == "__main__":
    main()
