"""Format the template's plain Python files with the rendered project's own ruff settings.

Renders the template (every optional file switched on), runs `ruff format` and `ruff check --fix`
on the render, and copies each changed file back where the template file has no Jinja in it.
Jinja files (*.jinja) are reported, not touched: fix those by hand.

    uv run python scripts/format_template.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template"
sys.path.insert(0, str(ROOT / "tests"))

from support import ANSWER_SETS, render, set_task_env  # noqa: E402 (tests/ is on sys.path from here)

TAG = re.compile(r"\{%[^%]*%\}")


def main() -> int:
    set_task_env("MCP_TEMPLATE_SKIP_LOCK", "1")
    ruff = [sys.executable, "-m", "ruff"]
    for name in ("http_all", "oauth"):
        with tempfile.TemporaryDirectory() as tmp:
            out = render(ANSWER_SETS[name], Path(tmp) / "p", vcs_ref=None)
            package = next((out / "src").iterdir()).name
            subprocess.run([*ruff, "format", "--quiet", "."], cwd=out, check=False)
            subprocess.run([*ruff, "check", "--fix", "--quiet", "."], cwd=out, check=False)
            for source in TEMPLATE.rglob("*"):
                if not source.is_file() or source.suffix == ".jinja":
                    continue
                rel = TAG.sub("", str(source.relative_to(TEMPLATE)).replace("{{package_name}}", package))
                target = out / rel
                if target.exists() and target.read_text() != source.read_text():
                    source.write_text(target.read_text())
                    print("formatted", source.relative_to(ROOT))
            subprocess.run([*ruff, "check", "--quiet", "."], cwd=out, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
