"""Podman (Debian's, with runc) and a stand-in for the official Python image, made by mmdebstrap.

The official image cannot be pulled on these machines; Debian's podman can run here with runc, the
cgroupfs manager and a containers.conf whose `default_ulimits` is empty (the sandbox refuses the raised
limits podman asks for by default). The stand-in is Debian bookworm (minbase) with python3, pip, venv and
`python` on PATH, made to look like the official image where the Dockerfile relies on it: pip may install
into the system interpreter (no EXTERNALLY-MANAGED marker), and the machine's own extra certificate
authorities (a TLS-inspecting proxy's, if any) are trusted, as the host trusts them. No mock: the tests
fail (never skip) without podman, runc or mmdebstrap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

CONTAINERS_CONF = """\
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
"""
DEBIAN = "http://deb.debian.org/debian"
STAND_IN_PACKAGES = "python3,python3-pip,python3-venv,python-is-python3,ca-certificates"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")


def require(*tools: str) -> list[str]:
    """The paths of `tools`; RuntimeError naming the missing ones."""
    found = [shutil.which(tool) for tool in tools]
    missing = [tool for tool, path in zip(tools, found, strict=True) if path is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not installed: apt-get install -y podman runc mmdebstrap (.ci/run does it)"
        )
    return [path for path in found if path]


class Podman:
    """`podman` with the sandbox's configuration (containers.conf written under `workdir`) and a storage of
    its own there, so that images, build stages, containers and volumes go when `reset()` is called."""

    def __init__(self, workdir: Path) -> None:
        self.podman, _, self.mmdebstrap = require("podman", "runc", "mmdebstrap")
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        # podman refuses a runroot path over 50 characters (pytest's under xdist are longer): a short one.
        self.runroot = Path(tempfile.mkdtemp(prefix="podman-run-"))
        self.storage = ["--root", str(workdir / "storage"), "--runroot", str(self.runroot)]
        self.workdir = workdir

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.podman, *self.storage, *args],
            env={**os.environ, "CONTAINERS_CONF": str(self.conf)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
            )
        return done

    def reset(self) -> None:
        """Remove everything this storage holds (containers, volumes, images), then the storage."""
        self.run("rm", "-af", "-t", "5", check=False)
        self.run("volume", "rm", "-af", check=False)
        self.run("rmi", "-af", check=False)
        shutil.rmtree(self.workdir / "storage", ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)

    def stand_in_python_image(self, workdir: Path, tag: str) -> str:
        """mmdebstrap a bookworm base like the official python image; import it as `tag`."""
        tarball = workdir / "base.tar"
        hooks: list[str] = ['--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED']
        for authority in sorted(LOCAL_CAS.glob("*.crt")) if LOCAL_CAS.is_dir() else []:
            hooks.append(f"--customize-hook=copy-in {authority} /usr/local/share/ca-certificates/")
        hooks.append('--customize-hook=chroot "$1" update-ca-certificates')
        sources: Sequence[str] = (
            f"deb {DEBIAN} bookworm main",
            f"deb {DEBIAN} bookworm-updates main",
            "deb http://deb.debian.org/debian-security bookworm-security main",
        )
        subprocess.run(
            [self.mmdebstrap, "--variant=minbase", f"--include={STAND_IN_PACKAGES}", *hooks, "bookworm",
             str(tarball), *sources],
            capture_output=True, text=True, timeout=900, check=True,
        )  # fmt: skip
        # uv trusts its own roots unless told to use the system's (which hold the local authorities).
        self.run("import", "--change", "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                 str(tarball), tag)  # fmt: skip
        tarball.unlink()
        return tag
