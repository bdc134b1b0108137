"""Moved to security/audit/redact.py; re-exported here only until the next release (see `check`)."""

from .audit.redact import *  # noqa: F403
