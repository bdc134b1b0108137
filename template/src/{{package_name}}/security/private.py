"""Moved to security/toolkit/private.py; re-exported here only until the next release (see `check`)."""

from .toolkit.private import *  # noqa: F403
