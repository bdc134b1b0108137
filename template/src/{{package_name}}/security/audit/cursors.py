"""Cursors: a store's position, opaque to the client, that pages on from where the last page ended."""

from __future__ import annotations

import base64
import re


class CursorError(ValueError):
    """A cursor that is well formed but names no position in this store (another store's, or out of range)."""


# A row number (SQLite, memory) or Redis stream IDs, one per stream ("ms-seq.ms-seq"); a newest-first
# cursor starts with "<", so that it cannot be used to page the other way.
_POSITION = re.compile(r"^<?\d{1,20}(?:-\d{1,20})?(?:\.\d{1,20}-\d{1,20})?$")


def encode_cursor(position: str, *, newest_first: bool = False) -> str:
    return base64.urlsafe_b64encode((("<" if newest_first else "") + position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, bool]:
    """(the store position inside a cursor, whether it pages newest first); ValueError if the cursor was
    not issued by a store here."""
    try:
        position = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this server issued") from None
    if len(cursor) > 128 or not _POSITION.match(position):
        raise ValueError("cursor is not one this server issued")
    return position.removeprefix("<"), position.startswith("<")


def row_position(after: str | None) -> int:
    """A row-numbered store's position (SQLite, memory); CursorError if `after` cannot be one."""
    if after is None:
        return 0
    if not after.isdigit() or int(after) >= 2**63:
        raise CursorError("cursor does not belong to this audit store; start again without cursor")
    return int(after)
