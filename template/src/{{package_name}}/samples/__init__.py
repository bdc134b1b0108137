"""The template's sample tools, rendered by answer (answers.SAMPLE_TOOLS); your own tools go in `tools/`."""

from __future__ import annotations

import importlib
from collections.abc import Collection
from types import ModuleType

from ..answers import SAMPLE_TOOLS


def sample_modules(skip: Collection[str] = ()) -> list[ModuleType]:
    """The selected samples, sorted by name, but not those in `skip` (a module of yours replaces them)."""
    return [
        importlib.import_module(f"{__name__}.{name}") for name in sorted(SAMPLE_TOOLS) if name not in skip
    ]
