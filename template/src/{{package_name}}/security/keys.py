"""Moved to security/identity/keys.py; re-exported here only until the next release (see `check`)."""

from .identity.keys import *  # noqa: F403
