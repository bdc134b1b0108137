"""One SDK adapter: no private name of mcp, limits or uvicorn is used outside server/sdk.py (which checks
uvicorn's names from server/sdk_http.py in HTTP projects), and its start-up check passes on the pinned
libraries and stops start-up, naming server/sdk.py, when a name is gone.

The rule over the rendered source (`private_reaches`): an attribute whose name starts with one underscore
(dunders aside), read with `.name` or with getattr/hasattr/setattr/delattr and a literal name, is allowed
outside sdk.py only if the project itself defines that name (its own private state, methods, helpers),
or, for a name sdk.py lists (a private member of a library class the project subclasses), only on `self`,
`cls` or `super()`. Importing from a private module of mcp, limits or uvicorn is never allowed there.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from support import ANSWER_SETS, Venv, package_of

ADAPTER = Path("server") / "sdk.py"
LIBRARIES = ("mcp", "mcp_types", "limits", "uvicorn")
NAME_FUNCTIONS = frozenset({"getattr", "hasattr", "setattr", "delattr"})


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def listed_names(adapter: ast.Module) -> frozenset[str]:
    """The private library names sdk.py lists in its tuples of names (SESSION_STATE, TRANSPORT_METHODS...)."""
    names: set[str] = set()
    for node in adapter.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple | ast.BinOp):
            names.update(
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return frozenset(name for name in names if is_private(name))


def defined_names(modules: Iterable[ast.Module]) -> frozenset[str]:
    """Every private name the project defines: functions, classes, module and class attributes,
    `self._x = ...` state, imports under a private alias."""
    names: set[str] = set()
    for module in modules:
        for node in ast.walk(module):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _on_self(node.value):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
    return frozenset(name for name in names if is_private(name))


def _on_self(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


def _reached(node: ast.AST) -> tuple[str, ast.expr] | None:
    """(name, object) of an attribute read by `.name` or by getattr & co with a literal name."""
    if isinstance(node, ast.Attribute):
        return node.attr, node.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in NAME_FUNCTIONS
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.args[1].value, node.args[0]
    return None


def private_reaches(module: ast.Module, defined: frozenset[str], listed: frozenset[str]) -> Iterator[str]:
    """`line: code` for each use of a library's private name in one module, in line order."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(module):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            if any(is_private(part) for part in node.module.split(".")):
                found.append((node.lineno, f"from {node.module} import ..."))
            continue
        reached = _reached(node)
        if reached is None or not is_private(reached[0]):
            continue
        name, owner = reached
        if not (_on_self(owner) if name in listed else name in defined):
            found.append((node.lineno, ast.unparse(node)))
    yield from (f"{line}: {code}" for line, code in sorted(found))


def scan(package: Path) -> dict[str, list[str]]:
    """{module: its reaches} over a rendered package, sdk.py aside."""
    adapter = ast.parse((package / ADAPTER).read_text())
    modules = {
        path.relative_to(package): ast.parse(path.read_text()) for path in sorted(package.rglob("*.py"))
    }
    defined = defined_names(tree for path, tree in modules.items() if path != ADAPTER)
    listed = listed_names(adapter)
    found = {
        str(path): list(private_reaches(tree, defined - listed, listed)) for path, tree in modules.items()
    }
    return {path: lines for path, lines in found.items() if Path(path) != ADAPTER and lines}


@pytest.mark.parametrize("answers", list(ANSWER_SETS))
def test_no_private_library_name_is_used_outside_the_adapter(
    rendered: Callable[[str], Path], answers: str
) -> None:
    project = rendered(answers)
    package = project / "src" / package_of(project)[1]
    assert (package / ADAPTER).is_file()
    assert scan(package) == {}


def test_the_rule_catches_each_kind_of_reach(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "server").mkdir(parents=True)
    (package / ADAPTER).write_text(
        'SESSION_STATE = ("_connection",)\nTRANSPORT_STATE = ("_read_stream_writer",)\n'
    )
    (package / "reaches.py").write_text(
        textwrap.dedent(
            """
            from mcp.server._streamable_http_modern import handle_modern_request
            from mcp.server.streamable_http import StreamableHTTPServerTransport


            def reaches(server, manager, ctx, transport):
                server._lowlevel_server.add_request_handler("x", None, None)
                state = manager._lifespan_state
                connection = ctx.session._connection
                writer = transport._read_stream_writer
                silent = getattr(ctx.session, "_connection", None)


            class Transport(StreamableHTTPServerTransport):
                _mine = 0

                def ok(self):
                    self._own()  # the project's own method
                    self._mine += 1  # and state
                    return self._read_stream_writer, super()._read_stream_writer  # listed in sdk.py

                def _own(self):
                    return self
            """
        )
    )
    found = scan(package)["reaches.py"]
    assert [line.split(": ", 1)[1] for line in found] == [
        "from mcp.server._streamable_http_modern import ...",
        "server._lowlevel_server",
        "manager._lifespan_state",
        "ctx.session._connection",
        "transport._read_stream_writer",
        "getattr(ctx.session, '_connection', None)",
    ], found


@pytest.mark.parametrize("answers", list(ANSWER_SETS))
def test_the_check_passes_on_the_pinned_libraries(
    rendered: Callable[[str], Path], venv: Venv, answers: str
) -> None:
    project = rendered(answers)
    package = package_of(project)[1]
    script = f"from {package}.server import sdk\nsdk.check()\nprint('checked')"
    result = venv.run(venv.python, "-c", script, cwd=project)
    assert result.returncode == 0 and result.stdout.strip() == "checked", result.stdout + result.stderr


@pytest.mark.parametrize(
    ("removed", "named"),
    [
        (
            "from mcp.server.streamable_http import StreamableHTTPServerTransport as owner; "
            + "del owner._check_content_type",
            "mcp StreamableHTTPServerTransport._check_content_type",
        ),
        (
            "from limits.aio.storage import MemoryStorage as owner\ndel owner._MemoryStorage__expire_events",
            "limits MemoryStorage._MemoryStorage__expire_events",
        ),
    ],
)
def test_start_up_stops_naming_the_adapter_when_a_name_is_gone(
    rendered: Callable[[str], Path], venv: Venv, removed: str, named: str
) -> None:
    project = rendered("stdio")
    package = package_of(project)[1]
    script = (
        f"{removed}\n"
        f"from {package}.server.build import build_server\n"
        f"from {package}.server.sdk import SDKChangedError\n"
        f"from {package}.settings import Settings\n"
        "try:\n"
        "    build_server(Settings(_env_file=None, security_events_url='memory://'))\n"
        "except SDKChangedError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = venv.run(venv.python, "-c", script, cwd=project, env={"MCP_DATA_DIR": str(project / "data")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("refused:"), result.stdout + result.stderr
    assert named in result.stdout and "server/sdk.py" in result.stdout, result.stdout
