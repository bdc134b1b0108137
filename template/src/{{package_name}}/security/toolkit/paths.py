"""Paths from callers, confined to one root directory.

A requested path is checked as text first (no `..`, no absolute or Windows-style paths, no encoded or
look-alike tricks), then opened one component at a time relative to a directory handle with
O_NOFOLLOW, so a symbolic link is never followed, not even one swapped in between check and open.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..refusal import RefusedError

MAX_PATH_CHARS = 1024
MAX_COMPONENTS = 32
MAX_NAME_BYTES = 255

_DRIVE = re.compile(r"^[A-Za-z]:")
_PERCENT_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}|%u[0-9A-Fa-f]{4}")
# Characters that look like a slash, backslash or dot but are not one (NFKC keeps some of them).
_LOOKALIKES = frozenset(
    "\u2215\u2044\u29f8\u2216\u29f5\u29f9\ufe68\uff0f\uff3c\u2024\ufe52\uff0e\u3002\uff61"
)
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not hang the server waiting for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


class PathRefusedError(RefusedError):
    """The path is refused; `reason` is short, safe to show and never contains the root.

    The guard answers it as "Path refused: <reason>." with an `input_validation_failed` event.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"Path refused: {reason}.", event="input_validation_failed", reason=reason)
        self.reason = reason


def split_relative(raw: str) -> tuple[str, ...]:
    """The components of a relative path under the root; "" or "." is the root itself."""
    if len(raw) > MAX_PATH_CHARS:
        raise PathRefusedError(f"path is longer than {MAX_PATH_CHARS} characters")
    if "\x00" in raw:
        raise PathRefusedError("path contains a NUL byte")
    if "\\" in raw:
        raise PathRefusedError("backslashes are not allowed; use / between directories")
    if _DRIVE.match(raw) or raw.startswith("//"):
        raise PathRefusedError("Windows drive letters and UNC paths are not allowed; use a relative path")
    if raw.startswith(("/", "~")):
        raise PathRefusedError("absolute paths are not allowed; use a path relative to the files root")
    if _PERCENT_ENCODED.search(raw):
        raise PathRefusedError("percent-encoded characters are not decoded; write the name plainly")
    for char in raw:
        if char in _LOOKALIKES or unicodedata.category(char) in _BAD_CATEGORIES:
            raise PathRefusedError(f"path contains a disallowed character (U+{ord(char):04X})")
    if unicodedata.normalize("NFKC", raw) != raw:
        raise PathRefusedError("path is not in Unicode normal form NFKC (look-alike characters?)")
    if raw in ("", "."):
        return ()
    parts = tuple(raw.removesuffix("/").split("/"))
    if len(parts) > MAX_COMPONENTS:
        raise PathRefusedError(f"path is deeper than {MAX_COMPONENTS} directories")
    for part in parts:
        if part in ("", ".", ".."):
            raise PathRefusedError("empty, '.' and '..' path components are not allowed")
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise PathRefusedError(f"a name is longer than {MAX_NAME_BYTES} bytes")
    return parts


def _explain(exc: OSError) -> PathRefusedError:
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return PathRefusedError("symbolic links are not followed")
    if exc.errno == errno.ENOENT:
        return PathRefusedError("no such file or directory")
    if exc.errno == errno.ENOTDIR:
        return PathRefusedError("not a directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PathRefusedError("permission denied")
    if exc.errno == errno.ENAMETOOLONG:
        return PathRefusedError("name too long")
    return PathRefusedError("the path cannot be opened")


@dataclass(frozen=True, slots=True)
class Confined:
    """A root directory and the only way to open what is under it."""

    root: Path

    @classmethod
    def at(cls, root: Path) -> Confined:
        return cls(root.resolve())

    @contextmanager
    def open(self, raw: str, *, directory: bool) -> Iterator[tuple[int, os.stat_result]]:
        """Yield (fd, stat) for a regular file or a directory under the root, or raise PathRefusedError."""
        parts = split_relative(raw)
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            *parents, last = parts or (None,)
            steps = [(part, _DIR_FLAGS) for part in parents]
            if last is not None:
                steps.append((last, _DIR_FLAGS if directory else _FILE_FLAGS))
            for name, flags in steps:
                next_fd = _open_at(fd, name, flags)
                os.close(fd)
                fd = next_fd
            info = os.fstat(fd)
            if directory and not stat.S_ISDIR(info.st_mode):
                raise PathRefusedError("not a directory")
            if not directory:
                if stat.S_ISDIR(info.st_mode):
                    raise PathRefusedError("is a directory; use the list tool")
                if not stat.S_ISREG(info.st_mode):
                    raise PathRefusedError("not a regular file (devices, FIFOs and sockets are refused)")
                if info.st_nlink > 1:
                    # A hard link can make a file from outside the root appear inside it.
                    raise PathRefusedError("files with several hard links are refused")
            yield fd, info
        finally:
            os.close(fd)


def _open_at(dir_fd: int, name: str, flags: int) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR and _is_link(dir_fd, name):
            raise PathRefusedError("symbolic links are not followed") from None
        raise _explain(exc) from None


def _is_link(dir_fd: int, name: str) -> bool:
    # Only to word the refusal; the open above already refused without following anything.
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False
