"""Your tool modules: every module in this package that defines `register(guard, settings)` is served.

Drop a module here (about.py is the example to copy) and it is served: there is no list to edit, and
this file is the template's (`copier update` keeps it in step). A module whose name starts with `_`
is skipped, so helpers can live beside the tools. The template's sample tools chosen at generation
(answers.SAMPLE_TOOLS) live in ../samples and are registered after yours; a module of yours with a
sample's name (say tools/files.py) is served in that sample's place.

The order is fixed: your modules sorted by name, then the samples sorted by name. `check` (and the
test suite, in CI) compares what is served with tools.lock.json, so a module nobody reviewed is caught.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from ..samples import sample_modules
from ..security.guard import Guard
from ..settings import Settings


def tool_modules() -> list[ModuleType]:
    """Your modules here that define `register`, sorted by name, then the samples you do not replace."""
    yours = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda found: found.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "register", None)):
            yours.append(module)
    names = {module.__name__.rpartition(".")[2] for module in yours}
    return yours + sample_modules(skip=names)


def register_tools(guard: Guard, settings: Settings) -> None:
    for module in tool_modules():
        module.register(guard, settings)
