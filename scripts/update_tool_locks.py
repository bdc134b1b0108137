"""Regenerate tool-locks/<module>.json, from which each rendered project's tools.lock.json is made.

Run it after changing a sample tool's, resource's or prompt's name, description, arguments, annotations,
scopes or (for a prompt) text:

    uv run python scripts/update_tool_locks.py

It renders a project with every sample tool that has a module, installs it in a scratch virtual
environment, and records each tool module's manifest separately. Review `git diff tool-locks/`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import BASE, clean_env, make_venv, render, set_task_env  # noqa: E402 (tests/ is on sys.path from here)

TOOLS = ["fetch", "files", "notes", "records", "sandbox", "upstream"]
SCRIPT = """
import json, sys, tempfile
from pathlib import Path
from lock_probe import tools
from lock_probe.security.manifest import SECTIONS, served
from lock_probe.server.build import build_guard
from lock_probe.server.services import open_services
from lock_probe.settings import Settings

scratch = Path(tempfile.mkdtemp())
settings = Settings(_env_file=None, transport="stdio", security_events_url="memory://",
                    data_dir=scratch / "data", files_root=scratch / "data" / "files")
modules, tools.tool_modules = tools.tool_modules(), list
guard = build_guard(settings, open_services(settings))  # the real guard, with no tools yet
out = {}
for module in modules:
    before = served(guard)
    module.register(guard, settings)
    after = served(guard)
    out[module.__name__.rsplit(".", 1)[-1]] = {
        s: {k: v for k, v in after[s].items() if k not in before[s]}
        for s in SECTIONS
        if after[s].keys() - before[s].keys()
    }
json.dump(out, sys.stdout)
"""


def main() -> int:
    modules_dir = ROOT / "template" / "src" / "{{package_name}}" / "samples"
    present = [
        t for t in TOOLS if any(p.name.endswith(f"{t}.py{{% endif %}}") for p in modules_dir.iterdir())
    ]
    set_task_env("MCP_TEMPLATE_SKIP_LOCK", "1")
    with tempfile.TemporaryDirectory() as scratch:
        project = render(
            {**BASE, "project_name": "Lock Probe", "transport": "stdio", "sample_tools": present},
            Path(scratch) / "project",
            vcs_ref=None,
            skip_tasks=True,
        )
        venv = make_venv(Path(scratch) / "venv")
        venv.install(project)
        result = subprocess.run(
            [venv.python, "-c", SCRIPT],
            capture_output=True,
            text=True,
            check=True,
            cwd=scratch,
            timeout=300,
            env=clean_env(),
        )
    for module, sections in json.loads(result.stdout).items():
        path = ROOT / "tool-locks" / f"{module}.json"
        path.write_text(json.dumps(sections, indent=2, sort_keys=True) + "\n")
        summary = ", ".join(f"{len(items)} {section}" for section, items in sections.items())
        print(f"wrote {path.relative_to(ROOT)} ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
