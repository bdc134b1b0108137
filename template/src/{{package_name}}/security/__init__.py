"""The defences, by concern: guard (the MCP-level checks), perimeter (HTTP), audit, identity, limits.

toolkit/ holds what tools import (confined paths, private data, checked URLs, the sandbox). The modules
left at their old paths here (paths.py, private.py, ...) only re-export their new homes, for one release.
"""
