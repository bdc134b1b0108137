"""The rendered project's toolchain: Dockerfile, build context, CI workflow, pre-commit, packaging, README.

No Docker engine runs here, so the image is checked in parts that are each real: hadolint lints the
Dockerfile; docker-py's own .dockerignore matcher computes the build context; and the server runs the way
the image runs it (its ENV, its numeric user, a read-only root filesystem with only /data writable) inside
bubblewrap, where the image's HEALTHCHECK command is run against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from docker.utils.build import exclude_paths

from support import (
    ANSWER_SETS,
    BASE,
    Server,
    Venv,
    clean_env,
    client_key,
    free_port,
    http_client,
    package_of,
    read_env_file,
    render,
    text_of,
    uv,
    wait_until_up,
)

BIN = Path(sys.executable).parent
ALL_SETS = sorted(ANSWER_SETS)


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=600, **kwargs)


# ---- Dockerfile ------------------------------------------------------------------------------------


def final_stage(project: Path) -> list[str]:
    """The last stage's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (project / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    start = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[start:]


def instruction(stage: list[str], name: str) -> str:
    found = [line[len(name) + 1 :] for line in stage if line.startswith(name + " ")]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def image_env(stage: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in stage:
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


@pytest.mark.parametrize("name", ["stdio", "both", "oauth"])
def test_dockerfile_passes_hadolint_with_no_finding(name: str, rendered: Callable[[str], Path]) -> None:
    project = rendered(name)
    result = run(
        [
            str(BIN / "hadolint"),
            "--no-color",
            "--disable-ignore-pragma",
            "--failure-threshold",
            "style",
            "Dockerfile",
        ],
        cwd=project,
        env={**os.environ, "HOME": str(project)},  # no user config can relax the rules
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("name", ["stdio", "both"])
def test_image_runs_as_a_numeric_non_root_user_with_no_secret(
    name: str, rendered: Callable[[str], Path]
) -> None:
    project = rendered(name)
    stage = final_stage(project)
    uid, _, gid = instruction(stage, "USER").partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and gid.isdigit()
    # ...the user the image creates and gives /data to.
    assert f"--uid {uid}" in "\n".join(stage) and f"--gid {gid}" in "\n".join(stage)
    env = image_env(stage)
    assert env["MCP_DATA_DIR"] == "/data"
    # The files sample's root is under /data; a project without that sample has no such setting.
    assert env.get("MCP_FILES_ROOT", "/data/").startswith("/data/")
    assert ("MCP_FILES_ROOT" in env) == (name == "stdio")
    dockerfile = (project / "Dockerfile").read_text()
    assert not re.search(r"(?i)^\s*(ARG|ENV)\b.*(KEY|SECRET|TOKEN|PASSWORD)\w*=", dockerfile, re.MULTILINE)
    assert not re.search(r"^\s*(COPY|ADD)\s+(\.|\.env\S*)\s", dockerfile, re.MULTILINE), (
        "copies the whole context"
    )
    http = name != "stdio"
    assert ("HEALTHCHECK" in dockerfile) is http and ("EXPOSE 8000" in dockerfile) is http
    if http:
        assert "curl" not in instruction(stage, "HEALTHCHECK") and "/health" in instruction(
            stage, "HEALTHCHECK"
        )


def test_build_context_keeps_secrets_out(rendered: Callable[[str], Path], tmp_path: Path) -> None:
    """What `docker build .` would send, computed by docker-py's .dockerignore matcher."""
    project = tmp_path / "p"
    shutil.copytree(rendered("both"), project, ignore=shutil.ignore_patterns(".git"))
    _, package = package_of(project)
    for junk in (
        ".env.production",
        "server.key",
        "certs/tls.pem",
        "data/security-events.db",
        ".venv/bin/python",
        "src/" + package + "/__pycache__/x.pyc",
        ".git/config",
        "uv.lock",
    ):
        (project / junk).parent.mkdir(parents=True, exist_ok=True)
        (project / junk).write_text("x")
    patterns = [
        line.strip()
        for line in (project / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = set(exclude_paths(str(project), patterns))
    files = {path for path in context if (project / path).is_file()}
    for needed in (
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "tools.lock.json",
        f"src/{package}/cli.py",
        f"src/{package}/server/build.py",
    ):
        assert needed in files, needed
    leaked = [
        path
        for path in files
        if re.search(r"(^|/)(\.env|.*\.(key|pem|db|pyc))|^\.venv/|^\.git/|^data/", path)
    ]
    assert not leaked, leaked
    assert (project / ".env").is_file() and ".env" not in files


def read_only_root(data_dir: Path, visible: list[Path], uid: str, gid: str) -> list[str]:
    """bwrap options for a container-like view: read-only /, a private /tmp, only /data writable."""
    args = ["bwrap", "--tmpfs", "/"]
    for entry in sorted(Path("/").iterdir()):
        if entry.name in {"proc", "dev", "tmp", "sys", "data"}:
            continue
        if entry.is_symlink():
            args += ["--symlink", str(entry.readlink()), str(entry)]
        elif entry.is_dir():
            args += ["--ro-bind", str(entry), str(entry)]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 - the sandbox's own, empty /tmp
    for path in visible:  # the installed project lives under /tmp here; in the image it is /app/.venv
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(data_dir), "/data", "--remount-ro", "/"]
    return [
        *args,
        "--unshare-user",
        "--uid",
        uid,
        "--gid",
        gid,
        "--unshare-pid",
        "--die-with-parent",
        "--chdir",
        "/",
    ]


@pytest.fixture
def contained_server(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> Iterator[tuple[Server, dict[str, Any]]]:
    project = rendered("both")
    stage = final_stage(project)
    uid, _, gid = instruction(stage, "USER").partition(":")
    command = json.loads(instruction(stage, "ENTRYPOINT")) + json.loads(instruction(stage, "CMD"))
    command[0] = venv.bin(command[0])
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    env = {k: v for k, v in image_env(stage).items() if k != "PATH"}
    # As in the image, except that tests stay on loopback (the image binds 0.0.0.0) and pick a free port.
    env.update(read_env_file(project), MCP_HOST="127.0.0.1", MCP_PORT=str(port))  # --env-file .env
    # The test runner's own interpreter too: the probe below runs it, and a checkout may live under /tmp.
    runner = Path(sys.prefix).resolve()
    sandbox = read_only_root(data, [venv.path.resolve(), project.resolve(), runner], uid, gid)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*sandbox, *command],
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log_path, env=env)
    try:
        wait_until_up(server)
        yield server, {"stage": stage, "data": data, "sandbox": sandbox, "key": client_key(env)}
    finally:
        server.stop(signal.SIGTERM)


def test_image_runs_on_a_read_only_root_with_only_data_writable(
    contained_server: tuple[Server, dict[str, Any]],
) -> None:
    server, info = contained_server
    # The sandbox is what it claims: / is read-only, /data is writable, and we are the image's user.
    probe = run(
        [
            *info["sandbox"],
            sys.executable,
            "-c",
            "import os; open('/data/probe', 'w').close(); print(os.getuid());open('/usr/probe', 'w')",
        ]
    )
    assert (
        "Read-only file system" in probe.stderr
        and probe.stdout.strip() == instruction(info["stage"], "USER").split(":")[0]
    )

    async def call() -> str:
        async with http_client(server.url, info["key"]) as client:
            return text_of(await client.call_tool("whoami", {}))

    assert anyio.run(call)
    # The audit trail went where the image keeps data, and nowhere else could be written.
    assert (info["data"] / "security-events.db").is_file()

    healthcheck = json.loads(instruction(info["stage"], "HEALTHCHECK").split(" CMD ", 1)[1])
    assert healthcheck[0] == "python"
    check = [sys.executable, *healthcheck[1:]]
    healthy = run(check, env={**os.environ, "MCP_PORT": str(server.port)})
    assert healthy.returncode == 0, healthy.stderr
    server.stop()
    unhealthy = run(check, env={**os.environ, "MCP_PORT": str(server.port)})
    assert unhealthy.returncode != 0


# ---- CI workflow, pre-commit, optional files -----------------------------------------------------------


@pytest.mark.parametrize("name", ["stdio", "both"])
def test_ci_workflow_is_valid_and_runs_every_check(name: str, rendered: Callable[[str], Path]) -> None:
    project = rendered(name)
    workflow = project / ".github" / "workflows" / "ci.yml"
    # Offline: the schema is the one bundled with check-jsonschema (no network in this namespace).
    result = run(
        [
            "bwrap",
            "--dev-bind",
            "/",
            "/",
            "--unshare-net",
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(workflow),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    steps = {job: " ; ".join(step.get("run", "") for step in spec["steps"]) for job, spec in jobs.items()}
    assert "uv run ruff check" in steps["lint"] and "ruff format --check" in steps["lint"]
    assert "uv run mypy" in steps["types"]
    assert "uv run pytest" in steps["tests"]
    assert "uv run bandit -c pyproject.toml -r src" in steps["bandit"]
    assert "pip-audit" in steps["pip-audit"]
    assert all("--locked" in steps[job] for job in jobs)
    assert yaml.safe_load(workflow.read_text())["permissions"] == {"contents": "read"}


def test_a_broken_workflow_is_caught(rendered: Callable[[str], Path], tmp_path: Path) -> None:
    """The validator can fail: a job without runs-on is refused."""
    workflow = yaml.safe_load((rendered("both") / ".github" / "workflows" / "ci.yml").read_text())
    del workflow["jobs"]["lint"]["runs-on"]
    broken = tmp_path / "ci.yml"
    broken.write_text(yaml.safe_dump(workflow))
    result = run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)])
    assert result.returncode == 1


def test_pre_commit_config_is_valid_and_has_the_hooks(
    rendered: Callable[[str], Path], tmp_path: Path
) -> None:
    project = rendered("both")
    config = project / ".pre-commit-config.yaml"
    result = run(
        [str(BIN / "pre-commit"), "validate-config", str(config)],
        env={**os.environ, "PRE_COMMIT_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    hooks = {
        hook["id"]: hook for repo in yaml.safe_load(config.read_text())["repos"] for hook in repo["hooks"]
    }
    for needed in ("ruff-check", "ruff-format", "check-merge-conflict", "detect-private-key", "no-rej-files"):
        assert needed in hooks, needed
    assert (
        "--assume-in-merge" in hooks["check-merge-conflict"]["args"]
    )  # copier's markers come outside a merge
    assert hooks["no-rej-files"]["language"] == "fail" and re.search(
        hooks["no-rej-files"]["files"], "a/README.md.rej"
    )


def test_docker_and_ci_are_optional(tmp_path: Path) -> None:
    answers = {
        **BASE,
        "project_name": "Acme Plain",
        "transport": "http",
        "sample_tools": [],
        "include_docker": False,
        "include_ci": False,
    }
    project = render(answers, tmp_path / "p", skip_tasks=True)
    for absent in ("Dockerfile", ".dockerignore", ".github"):
        assert not (project / absent).exists(), absent
    assert "docker" not in (project / "README.md").read_text().lower()
    assert "Dockerfile" not in (project / "SECURITY.md").read_text()
    assert (project / ".pre-commit-config.yaml").is_file()


# ---- packaging -----------------------------------------------------------------------------------------


def test_uvx_runs_the_project_without_a_checkout(rendered: Callable[[str], Path]) -> None:
    project = rendered("both")
    command, _ = package_of(project)
    result = run(
        [uv(), "tool", "run", "--isolated", "--from", str(project), command, "--help"], env=clean_env()
    )
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "keygen" in result.stdout


def test_the_wheel_holds_the_package_and_nothing_else(
    rendered: Callable[[str], Path], tmp_path: Path
) -> None:
    project = rendered("both")
    _, package = package_of(project)
    result = run([uv(), "build", "--wheel", "--out-dir", str(tmp_path), str(project)], env=clean_env())
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"{package}/cli.py" in names
    assert all(
        name.startswith((f"{package}/", f"{package.replace('_', '-')}-", f"{package}-")) for name in names
    ), names
    assert not [name for name in names if ".env" in name]


# ---- the rendered documents ----------------------------------------------------------------------------


def json_blocks(markdown: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", markdown, re.DOTALL)]


@pytest.mark.parametrize("name", ALL_SETS)
def test_readme_client_configs_are_valid_and_match_the_cli(
    name: str, rendered: Callable[[str], Path], venv: Venv
) -> None:
    project = rendered(name)
    command, _ = package_of(project)
    readme = (project / "README.md").read_text()
    transport = ANSWER_SETS[name]["transport"]
    servers = {}
    for config in json_blocks(readme):
        servers.update(config.get("mcpServers", {}))
        servers.update(config.get("servers", {}))
    assert servers
    stdio = [s for s in servers.values() if s.get("command") == "uv"]
    remote = [s for s in servers.values() if s.get("command") != "uv"]
    assert bool(stdio) == (transport != "http") and bool(remote) == (transport != "stdio")
    for server in stdio:
        args = server["args"]
        assert args[0] == "--directory" and args[2:4] == ["run", command]
        # The arguments the client will pass are ones this project's CLI accepts.
        accepted = venv.run(venv.bin(command), *args[4:], "--help", cwd=project)
        assert accepted.returncode == 0, accepted.stderr
    if transport != "http":
        assert "stdio needs no key" in readme
    for server in remote:
        url = server.get("url") or next(arg for arg in server["args"] if arg.startswith("http"))
        assert url == "http://127.0.0.1:8000/mcp"
        header = json.dumps(server)
        assert "Bearer" in header and re.search(r"\$\{(input|env):|\$\{AUTH_HEADER\}", header)
    if transport != "stdio":
        assert (
            "npx -y @modelcontextprotocol/inspector@2.12.0 --cli http://127.0.0.1:8000/mcp --transport http"
            in readme
        )
    else:
        assert f"--method tools/list -- uv run {command} serve --transport stdio" in readme
    keys = read_env_file(project)
    assert not [value for value in keys.values() if value in readme]


def test_security_policy_says_how_to_report(rendered: Callable[[str], Path]) -> None:
    both = (rendered("both") / "SECURITY.md").read_text()
    assert "Report a vulnerability" in both and BASE["author_email"] in both
    assert "MCP_TRUSTED_ORIGINS" in both and "Threat model" in both
    stdio = (rendered("stdio") / "SECURITY.md").read_text()
    assert "there is no key" in stdio and "MCP_TRUSTED_ORIGINS" not in stdio
