"""What `check` says about code written for the template's previous layout: imports of moved modules.

Template 0.2.0 moved modules (CHANGELOG.md has the table). The ones tools import keep a re-export at
their old path for one release; `check` names each import of an old path it finds in your code (the
package and tests/), with the new path, so that you can change it before the re-export goes. It also
says when tools/__init__.py still has the MODULES list of old (kept from an update's conflict), and when
a module of yours in tools/ has a sample's name (it is served in that sample's place).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from .. import answers

PACKAGE: Final = __name__.rsplit(".", 2)[0]  # this module is <package>.checks.upgrade
# Old module -> new module, relative to the package.
MOVED: Final = {
    "profile": "answers",
    "security.paths": "security.toolkit.paths",
    "security.private": "security.toolkit.private",
    "security.urls": "security.toolkit.urls",
    "security.sandbox": "security.toolkit.sandbox",
    "security.sandbox_cgroup": "security.toolkit.sandbox_cgroup",
    "security.sandbox_seccomp": "security.toolkit.sandbox_seccomp",
    "security.principal": "security.identity.principal",
    "security.keys": "security.identity.keys",
    "security.redact": "security.audit.redact",
    "security.events": "security.audit.events",
    "security.event_stores": "security.audit.event_stores",
    "security.alerts": "security.audit.alerts",
    "security.anomaly": "security.audit.anomaly",
    "security.metrics": "security.audit.metrics",
    "security.ratelimit": "security.limits",
    "services": "server.services",
    "tracing": "server.observability",
    "operations": "server.observability",
    **{f"tools.{name}": f"samples.{name}" for name in answers.SAMPLE_TOOLS},
    **({"tools.fetch_transport": "samples.fetch_transport"} if "fetch" in answers.SAMPLE_TOOLS else {}),
}
# Moved without a re-export at the old path (no tool imported them; the samples neither, since a module in
# tools/ is served): an import of one fails.
GONE: Final = frozenset(
    f"security.{name}"
    for name in (
        "sandbox_cgroup",
        "sandbox_seccomp",
        "events",
        "event_stores",
        "alerts",
        "anomaly",
        "metrics",
    )
) | {"security.ratelimit", "services", "tracing", "operations"}


def upgrade_warnings(package_dir: Path | None = None, tests_dir: Path | None = None) -> list[str]:
    """One line per import of a moved module in the package and tests/, and per sample a module replaces."""
    package_dir = package_dir or Path(__file__).resolve().parent.parent
    tests_dir = tests_dir or package_dir.parent.parent / "tests"
    lines = []
    for path in sorted(
        [*package_dir.rglob("*.py"), *(tests_dir.rglob("*.py") if tests_dir.is_dir() else ())]
    ):
        for line, old in old_imports(path, package_dir):
            new = MOVED[old]
            if old.startswith("tools.") and (package_dir / Path(*old.split("."))).with_suffix(".py").exists():
                continue  # a module of yours in tools/ with that name: not the moved sample
            gone = old in GONE or old.startswith("tools.")
            kept = "not re-exported: the import fails" if gone else "re-exported until the next release"
            lines.append(
                f"{_shown(path)}:{line} imports {PACKAGE}.{old}, which moved to {PACKAGE}.{new} ({kept}); "
                "import it from there"
            )
    init = package_dir / "tools" / "__init__.py"
    if init.is_file() and "MODULES" in init.read_text(encoding="utf-8", errors="replace"):
        lines.append(
            f"{_shown(init)} still lists MODULES: it is the template's file, which now finds every module in "
            "tools/; take the template's version (your modules are served without the list)"
        )
    for name in sorted(answers.SAMPLE_TOOLS):
        mine = package_dir / "tools" / f"{name}.py"
        if mine.exists():
            lines.append(
                f"{_shown(mine)} is served in place of the sample samples/{name}.py (the samples moved there "
                "in 0.2.0): keep it as your own tool, or delete it to serve the template's sample"
            )
    return lines


def old_imports(path: Path, package_dir: Path) -> Iterator[tuple[int, str]]:
    """(line, old module relative to the package) for each import of a moved module in the file."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return
    inside = path.resolve().is_relative_to(package_dir.resolve())
    here = path.resolve().relative_to(package_dir.resolve()).parent.parts if inside else ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level and not inside:
                continue
            base = [PACKAGE, *here[: len(here) - node.level + 1]] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            modules = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for module in modules:
            relative = module.removeprefix(f"{PACKAGE}.")
            if relative != module and relative in MOVED:
                yield node.lineno, relative
                break


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
