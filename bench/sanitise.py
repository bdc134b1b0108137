"""What sanitising one result costs (security/redact.py, `Redactor.result`), per result size.

    uv run python bench/sanitise.py [--repeat 200] [--no-write]

The redactor is loaded from the template as it is rendered (its package has no Jinja in it) and knows
four secrets, as a small deployment has: two raw API keys, an admin key and an upstream key. Each
result is a tools/call result (wire form) with one text block: prose, or Python source (which holds
`key=` and `token=` and so runs the credential patterns), with no secret in it (the common case),
and with one secret in it (the slow path: the exact cut). Rewrites its own section of docs/benchmarks.md
(`--no-write`: prints only).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import inspect
import secrets
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from limiter_support import machine, write_section  # noqa: E402 (bench/ is on sys.path from here)

SECTION = "Sanitising results (bench/sanitise.py)"
SECRETS = [
    "mcp_Zx9kQ2vLr8TtYp4NwB7sHd1FgJ6mKc3A0eUoRiWl5Xq",
    "mcp_Pq7Lm2Nb8Vc4Xz1Kj6Hg3Fd9Sa5Qw0Er7Ty2Ui8Op4As",
    "mcp_admin-Hy6Gt5Fr4De3Sw2Aq1Zx0Cv9Bn8Mk7Lj6Ki5",
    "upstream-S3cr3t+/value==xyz-0123456789",
]


def load_redact() -> ModuleType:
    """security/audit/redact.py, imported as part of its package (it imports its siblings)."""
    audit = ROOT / "template" / "src" / "{{package_name}}" / "security" / "audit"
    spec = importlib.util.spec_from_file_location(
        "bench_audit", audit / "__init__.py", submodule_search_locations=[str(audit)]
    )
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {audit}")
    package = importlib.util.module_from_spec(spec)
    sys.modules["bench_audit"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("bench_audit.redact")


def texts(size: int) -> dict[str, str]:
    prose = ("The quarterly figures were reviewed by the team and filed. " * (size // 50 + 1))[:size]
    source = inspect.getsource(argparse)
    code = (source * (size // len(source) + 1))[:size]
    secret = base64.b64encode(b"Bearer " + SECRETS[3].encode()).decode()
    middle = size // 2
    leaked = prose[:middle] + " " + secret + " " + prose[middle + len(secret) + 2 :]
    settings = "".join(f"setting_{n}=value{n} colour=blue size={n}\n" for n in range(size // 30 + 1))[:size]
    return {
        "prose": prose,
        "source code": code,
        "settings (name=value)": settings,
        "prose, one secret (base64)": leaked,
    }


def measure(repeat: int) -> list[tuple[str, int, float, float]]:
    redact = load_redact()
    redactor = started(redact, SECRETS)
    rows = [
        timed(redactor, kind, text, max(5, repeat * 1_000 // size))
        for size in (1_000, 10_000, 100_000)
        for kind, text in texts(size).items()
    ]
    # 100,000 characters of prose against 1,000 raw keys (each a secret in nine forms): one pass with an
    # automaton (ahocorasick_rs), where one search per form would take 9,000.
    many = [*SECRETS, *(f"mcp_{secrets.token_urlsafe(32)}" for _ in range(1_000))]
    prose = texts(100_000)["prose"]
    rows.append(timed(started(redact, many), f"prose, {len(many):,} secrets", prose, max(5, repeat // 100)))
    return rows


def started(redact: ModuleType, known: list[str]) -> Any:
    began = time.perf_counter()
    redactor = redact.Redactor(known)
    print(f"start-up: {1000 * (time.perf_counter() - began):.1f} ms for {len(known)} secrets")
    return redactor


def timed(redactor: Any, kind: str, text: str, runs: int) -> tuple[str, int, float, float]:
    """Microseconds to sanitise `text` as a tools/call result, without and with callers_own_data."""
    result = {"content": [{"type": "text", "text": text}], "isError": False}
    times = {}
    for own in (False, True):
        redactor.result(result, callers_own_data=own)  # the first hit compiles the cut
        began = time.perf_counter()
        for _ in range(runs):
            redactor.result(result, callers_own_data=own)
        times[own] = (time.perf_counter() - began) / runs * 1e6
    size = len(text)
    print(f"{kind:28} {size:>7} chars: {times[False]:9.1f} us   callers_own_data: {times[True]:9.1f} us")
    return kind, size, times[False], times[True]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print the timings only")
    args = parser.parse_args()
    rows = measure(args.repeat)
    if args.no_write:
        return
    table = "\n".join(f"| {kind} | {size:,} | {full:,.0f} | {own:,.0f} |" for kind, size, full, own in rows)
    write_section(
        SECTION,
        f"`uv run python bench/sanitise.py` on {machine()}.\n\n"
        f"Microseconds to sanitise one tools/call result (one text block), the redactor knowing "
        f"{len(SECRETS)} secrets (each searched in 9 forms: case-folded plain, reversed and hex; base64 in "
        "both alphabets at three offsets). `callers_own_data` skips the credential patterns, never the "
        "secrets.\n\n"
        "| result | chars | sanitised (us) | callers_own_data (us) |\n|---|---|---|---|\n"
        f"{table}\n\n"
        "The cost grows with the result and with the number of secrets (one substring search per form, "
        "up to 64 search strings; beyond, one pass of an Aho-Corasick automaton over all of them: the "
        "last row, 1,000 raw keys in `MCP_API_KEYS`); "
        "a result with a secret in it also pays for the exact cut (a regex compiled at the first hit). "
        "Results are capped at `MCP_MAX_RESULT_CHARS` (100,000 by default). `name=value` credentials are "
        "found from each `=` (a search of the reversed text): the release before tried its pattern at every "
        "word, 102 ms per MB of settings-like text against 18 ms now (the same machine, one run).",
    )


if __name__ == "__main__":
    main()
