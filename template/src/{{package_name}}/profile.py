"""Moved to answers.py; re-exported here only until the next release (see `check`)."""

from .answers import *  # noqa: F403
