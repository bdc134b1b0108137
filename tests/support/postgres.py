"""A real, throwaway PostgreSQL cluster on a free loopback port (Debian's `postgresql` package).

initdb refuses to run as root, and CI runs as root: the cluster then belongs to `nobody` (setpriv drops
to it), in a directory of its own outside pytest's root-only temporary tree. No Unix socket, loopback
TCP only, password authentication (scram) for every role. No mock: the tests fail (never skip) when
PostgreSQL is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import free_port

SUPERUSER = "postgres"
NOBODY = 65534


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed; these tests need a real server: apt-get install -y postgresql "
            "(.ci/run does this)"
        )
    return found[-1].parent


@dataclass
class Postgres:
    bindir: Path
    root: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, user: str = SUPERUSER, password: str | None = None, database: str = "postgres") -> str:
        return f"postgresql://{user}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, *command: str) -> subprocess.CompletedProcess[str]:
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
        return subprocess.run(
            [*(drop if os.geteuid() == 0 else []), *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"},
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` as the superuser; its output, or RuntimeError with psql's message."""
        done = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-A",
                "-t",
            ],
            input=sql,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"},
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout

    def start(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if os.geteuid() == 0:
            os.chown(self.root, NOBODY, NOBODY)
            os.chown(password_file, NOBODY, NOBODY)
        init = self._as_owner(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--encoding=UTF8",
            "--no-sync",
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr}")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        started = self._as_owner(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        if started.returncode != 0:
            log = (self.root / "log").read_text(errors="replace") if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{log}")

    def stop(self) -> None:
        self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="mcp-postgres-"))
    server = Postgres(_bindir(), root, free_port(), os.urandom(12).hex())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
