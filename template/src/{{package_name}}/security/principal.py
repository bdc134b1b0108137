"""Moved to security/identity/principal.py; re-exported here only until the next release (see `check`)."""

from .identity.principal import *  # noqa: F403
