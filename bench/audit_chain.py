"""What the audit hash chain and group commit cost in the SQLite store, measured on the store as rendered.

    uv run python bench/audit_chain.py [--events 20000] [--rounds 5] [--no-write]

Chain on against off: CPU time per event written one at a time (each awaited, as at one connection),
with the chain as rendered and with its two steps (the row's canonical bytes, the SHA-256 link) made
free; rounds interleaved, medians reported. Group commit: latency p50/p99 of one event at a time (one
connection) and CPU per event with 8 and 64 events in flight, with batches as rendered against batches
of one (a commit per event, the release before). Rewrites its own section of docs/benchmarks.md unless
--no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from audit_store_scale import audit_modules  # noqa: E402
from limiter_support import machine, write_section  # noqa: E402

SECTION = "The audit hash chain and group commit (bench/audit_chain.py)"


def events(event_type: Any, count: int) -> list[Any]:
    return [
        event_type(
            id=f"{n:032x}",
            timestamp="2026-12-06T12:00:00.000000Z",
            event="tool_called",
            severity="low",
            identifier="key:4036ca58d309",
            tool="whoami",
            request_id=str(n),
            details={"outcome": "ok", "duration_ms": 1.2, "arguments": {"path": "notes/today.md"}},
        )
        for n in range(count)
    ]


async def one_at_a_time(store: Any, batch: list[Any]) -> tuple[float, list[float]]:
    """(CPU seconds, each event's latency in seconds), events awaited one after the other."""
    latencies = []
    cpu = time.process_time()
    for event in batch:
        began = time.perf_counter()
        await store.append(event)
        latencies.append(time.perf_counter() - began)
    return time.process_time() - cpu, latencies


async def in_flight(store: Any, batch: list[Any], concurrency: int) -> float:
    """CPU seconds to write `batch` with `concurrency` writers, each awaiting its own event."""
    queue = iter(batch)

    async def writer() -> None:
        for event in queue:
            await store.append(event)

    cpu = time.process_time()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return time.process_time() - cpu


def fresh(store_module: Any, scratch: Path, name: str) -> Any:
    return store_module.SqliteEventStore(str(scratch / f"{name}.db"), retention_days=90, max_rows=10_000_000)


def measure(count: int, rounds: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        store_module, layout, events_module = audit_modules(scratch, "Bench Chain")
        event_type = events_module.SecurityEvent
        link, material = layout.link, layout.row_material
        batch = events(event_type, count)
        for round_number in range(rounds):  # interleaved: a drift of the machine hits both sides alike
            for chain in (True, False):
                layout.link = link if chain else (lambda prev, _: prev)
                layout.row_material = material if chain else (lambda _: b"")
                store = fresh(store_module, scratch, f"chain-{chain}-{round_number}")
                cpu, _ = asyncio.run(one_at_a_time(store, batch))
                asyncio.run(store.aclose())
                figures.setdefault(f"chain {'on' if chain else 'off'} us/event", []).append(cpu / count * 1e6)
            layout.link, layout.row_material = link, material
            for grouped in (True, False):
                store_module._MAX_BATCH = 256 if grouped else 1
                label = "group" if grouped else "single"
                store = fresh(store_module, scratch, f"{label}-1-{round_number}")
                _, latencies = asyncio.run(one_at_a_time(store, batch))
                asyncio.run(store.aclose())
                latencies.sort()
                figures.setdefault(f"{label} p50 us", []).append(latencies[len(latencies) // 2] * 1e6)
                figures.setdefault(f"{label} p99 us", []).append(latencies[int(len(latencies) * 0.99)] * 1e6)
                for concurrency in (8, 64):
                    store = fresh(store_module, scratch, f"{label}-{concurrency}-{round_number}")
                    cpu = asyncio.run(in_flight(store, batch, concurrency))
                    transactions = store.transactions
                    asyncio.run(store.aclose())
                    figures.setdefault(f"{label} x{concurrency} us/event", []).append(cpu / count * 1e6)
                    figures.setdefault(f"{label} x{concurrency} events/commit", []).append(
                        count / transactions
                    )
            store_module._MAX_BATCH = 256
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    figures = measure(args.events, args.rounds)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        print(f"{name:>32}: {value:10.1f}")
    chain_cost = medians["chain on us/event"] - medians["chain off us/event"]
    print(f"{'the chain costs per event (us)':>32}: {chain_cost:10.1f}")
    if args.no_write:
        return
    rows = "\n".join(f"| {name} | {value:,.1f} |" for name, value in medians.items())
    write_section(
        SECTION,
        f"`uv run python bench/audit_chain.py --events {args.events} --rounds {args.rounds}` "
        f"on {machine()}.\n\n"
        "Medians of interleaved rounds. Chain on/off: CPU per event written one at a time, with the chain as "
        "rendered and with its steps made free; the difference is what the chain costs per event (target: "
        f"at most 15 us): **{chain_cost:,.1f} us**. group/single: batches as rendered against one commit per "
        "event (the release before); p50/p99 of one event at a time (one connection), and CPU per event and "
        "events per transaction with 8 and 64 in flight.\n\n"
        f"| figure | value |\n|---|---|\n{rows}",
    )


if __name__ == "__main__":
    main()
