"""What one Cedar policy decision costs in-process, remembered and asked anew (security/policy/engine.py).

    uv run python bench/policy_decision.py [--reuse] [--no-write]

bench/run.py measures the decision inside a served tools/call (20 policies on `whoami`, reading the
principal, the transport and the client's address: remembered after the first call). This measures
`Policies.decide` alone in the rendered project (bench/results/venv, as bench/run.py installs it;
`--reuse` skips the render), for the same 20 policies and for 20 that read the arguments of
`read_file` (`context.input.path`), which Cedar is asked every time. Rewrites its own section of
docs/benchmarks.md (`--no-write`: prints only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from limiter_support import machine, write_section  # noqa: E402 (bench/ is on sys.path from here)
from run import POLICIES_20, RESULTS, package_of, prepare  # noqa: E402

SECTION = "A Cedar policy decision (bench/policy_decision.py)"
# 20 rules on read_file that read its argument: one permit, 19 forbids on path prefixes and groups.
POLICIES_20_INPUT = '@id("scopes-decide")\npermit (principal, action, resource);\n' + "".join(
    f'@id("path-{n}")\nforbid (principal, action == Mcp::Action::"read_file", resource)\n'
    f'when {{ context.input.path like "private-{n}/*" && !principal.groups.contains("owners-{n}") }};\n'
    for n in range(19)
)
PROBE = """
import json, sys, tempfile, time
from pathlib import Path
from {package}.security.identity.principal import Principal
from {package}.server.build import build_guard
from {package}.server.services import open_services
from {package}.security.policy.loading import load_policies
from {package}.settings import Settings

rounds, cases = int(sys.argv[1]), json.loads(sys.argv[2])
settings = Settings()  # the project's .env, as `serve` reads it
catalogue = build_guard(settings, open_services(settings)).catalogue
principal = Principal(id="alice", scopes=frozenset({{"*"}}), groups=frozenset({{"analysts"}}))
out = {{}}
for label, (text, action, arguments) in cases.items():
    directory = Path(tempfile.mkdtemp()) / "policies"
    directory.mkdir()
    (directory / "bench.cedar").write_text(text)
    policies = load_policies(directory, catalogue, "bench")
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(1000):
            policies.decide(principal, action, arguments, client="10.1.2.3")
        best = min(best, (time.perf_counter() - start) / 1000 * 1e6)
    out[label] = best
print(json.dumps(out))
"""


def measure(rounds: int, reuse: bool) -> dict[str, float]:
    venv_python = str(RESULTS / "venv" / "bin" / "python")
    project = RESULTS / "project"
    if not reuse or not (RESULTS / "venv").exists():
        venv, project = prepare()
        venv_python = venv.python
    _, package = package_of(project)
    cases = {
        "20 policies on whoami, remembered (principal, transport, address)": (POLICIES_20, "whoami", {}),
        "20 policies on read_file reading context.input.path, asked every time": (
            POLICIES_20_INPUT,
            "read_file",
            {"path": "reports/q3.txt"},
        ),
    }
    result = subprocess.run(
        [venv_python, "-c", PROBE.format(package=package), str(rounds), json.dumps(cases)],
        capture_output=True,
        text=True,
        check=False,
        cwd=project,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    figures: dict[str, float] = json.loads(result.stdout)
    for label, micros in figures.items():
        print(f"{micros:7.1f} us  {label}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="use bench/results/venv as it is")
    parser.add_argument("--no-write", action="store_true", help="print the timings only")
    args = parser.parse_args()
    figures = measure(args.rounds, args.reuse)
    if args.no_write:
        return
    table = "\n".join(f"| {label} | {micros:.1f} |" for label, micros in figures.items())
    write_section(
        SECTION,
        f"`uv run python bench/policy_decision.py` on {machine()}.\n\n"
        "Microseconds per `Policies.decide` (best of the rounds, 1,000 decisions each), in-process. "
        "A decision that does not read the arguments is remembered per caller and client until the next "
        "reload (4,096 at most); one that reads them is asked of Cedar (cedarpy) every time.\n\n"
        f"| decision | us |\n|---|---|\n{table}\n\n"
        "Asked anew, most of the cost is cedarpy's: the request and context go to Rust as JSON, every "
        "policy of the action's slice is evaluated, and the answer comes back as JSON (about 13 us for one "
        "policy, 32 us for 20 inside Rust on this machine). Inside a served call the same decision costs "
        "about twice the in-process figure (the caches are colder): bench/run.py's row is the one to "
        "read for a served call.",
    )


if __name__ == "__main__":
    main()
