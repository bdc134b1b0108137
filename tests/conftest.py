"""Session fixtures: one shared virtual environment, and each answer set rendered and installed once."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from support import ANSWER_SETS, Venv, make_venv, render, set_task_env

# Tests render without locking: the lock is slow and proven once, in test_readme.
set_task_env("MCP_TEMPLATE_SKIP_LOCK", "1")
# ... and without installing pre-commit's git hooks (their first run fetches the hooks from the network).
set_task_env("MCP_TEMPLATE_SKIP_HOOKS", "1")


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    reuse = os.environ.get("MCP_TEMPLATE_TEST_VENV")  # a developer's shortcut between local runs
    path = Path(reuse) if reuse else tmp_path_factory.mktemp("venv") / "v"
    return make_venv(path)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory, venv: Venv) -> Callable[[str], Path]:
    """rendered("http_all") -> the path of that answer set's project, rendered and installed once."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            project = render(ANSWER_SETS[name], tmp_path_factory.mktemp(name) / "project")
            venv.install(project)
            cache[name] = project
        return cache[name]

    return get


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio, as the rendered servers do."""
    return "asyncio"
