"""Moved to security/toolkit/paths.py; re-exported here only until the next release (see `check`)."""

from .toolkit.paths import *  # noqa: F403
