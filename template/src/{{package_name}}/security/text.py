"""Moved to security/guard/text.py; this re-export is kept for one release."""

from .guard.text import INSTRUCTIONS, TRUNCATED, cap, fence, strip_controls

__all__ = ["INSTRUCTIONS", "TRUNCATED", "cap", "fence", "strip_controls"]
