"""Runtime data (audit trail, tool databases, the files root) is for the server's user alone.

Directories the server creates get 0700 and its database files 0600; SQLite gives a database's WAL and
SHM files the mode of the database file. `cli.main` also sets the umask to 077 for anything else.
A path that holds something other than a SQLite database, or side files without their database, is
refused before anything is opened, changed or deleted: SQLite would delete or replay a `-wal` or
`-journal` it finds, and the server changes the mode only of its own databases.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


class NotADatabaseError(OSError):
    """A database path that the server will not touch; the message says why and what to do."""


def database_problem(path: Path) -> str | None:
    """Why `path` cannot be (or become) one of the server's SQLite databases; None if it can."""
    if path.exists() and not path.is_file():
        return f"{path} is not a file; point the setting at a database file"
    if path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as file:
            if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return f"{path} exists and is not a SQLite database; point the setting at another file"
    elif not path.exists():
        beside = [path.name + suffix for suffix in SQLITE_SIDE_FILES]
        strays = [name for name in beside if path.with_name(name).exists()]
        if strays:
            return (
                f"{', '.join(strays)} beside {path} belong to no database there (SQLite would delete or "
                "replay them); move them away, or point the setting at another file"
            )
    return None


def private_directory(path: Path) -> Path:
    """Create `path` and any missing parent with mode 0700; an existing directory is left as it is."""
    missing = [parent for parent in (path, *path.parents) if not parent.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir(mode=0o700)
    return path


def private_database(path: Path) -> Path:
    """Make sure the SQLite file `path` exists with mode 0600 (and its side files, if any) before use;
    NotADatabaseError (nothing touched) if `path` holds something else (`database_problem`)."""
    problem = database_problem(path)
    if problem is not None:
        raise NotADatabaseError(problem)
    private_directory(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError, PermissionError):  # an older version made it 0644
            file.chmod(0o600)
    return path
