"""What module fixtures kept writing out again: a project rendered with tool modules of the test's own and
installed; a rendered server serving OAuth against a loopback issuer (its JWKS, the tokens it signs)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from support import Server, Venv, free_port, read_env_file, render, running_server
from support.tooling import Issuer, add_tool_module

# A tool module's source, or what makes it from the rendered project (e.g. a README example in it).
ModuleSource = str | Callable[[Path], str]


def installed_project(
    venv: Venv, directory: Path, answers: Mapping[str, Any], modules: Mapping[str, ModuleSource] | None = None
) -> Path:
    """`answers` rendered into `directory`/project, with `modules` (name -> source) added the way the README
    says, then installed into `venv`."""
    project = render(answers, directory / "project")
    for name, source in (modules or {}).items():
        add_tool_module(project, name, source if isinstance(source, str) else source(project))
    venv.install(project)
    return project


@contextlib.contextmanager
def serving_with_issuer(venv: Venv, project: Path, base: Path, **env: str) -> Iterator[tuple[Server, Issuer]]:
    """`serve` over HTTP with OAuth, trusting a loopback Issuer whose audience is this server's URL: the
    project's .env and the issuer's settings, data and logs under `base`, the per-client rate limit out of
    the way; `env` on top."""
    port = free_port()
    with Issuer(audience=f"http://127.0.0.1:{port}/mcp") as issuer:
        settings = {
            **read_env_file(project),
            **issuer.settings(),
            "MCP_DATA_DIR": str(base),
            "MCP_RATE_LIMIT": "100000/minute",
            **env,
        }
        with running_server(venv, project, settings, port=port, log_dir=base) as server:
            yield server, issuer
