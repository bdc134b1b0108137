"""Runtime data (audit trail, tool databases, the files root) is for the server's user alone.

Directories the server creates get 0700 and its database files 0600; SQLite gives a database's WAL and
SHM files the mode of the database file. `cli.main` also sets the umask to 077 for anything else.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_directory(path: Path) -> Path:
    """Create `path` and any missing parent with mode 0700; an existing directory is left as it is."""
    missing = [parent for parent in (path, *path.parents) if not parent.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir(mode=0o700)
    return path


def private_database(path: Path) -> Path:
    """Make sure the SQLite file `path` exists with mode 0600 (and its side files, if any) before use."""
    private_directory(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError, PermissionError):  # an older version made it 0644
            file.chmod(0o600)
    return path
