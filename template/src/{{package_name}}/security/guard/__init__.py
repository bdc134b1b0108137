"""The guard: every tool, resource and prompt a client can reach goes through it.

`Guard` (core.py) is the face: `@guard.tool`, `@guard.resource`, `@guard.prompt` and
`guard.middleware`. A tool module imports what it needs from here; the modules beside this one each
do one job (see `Guard`'s docstring for the map).
"""

from .call import CallInfo, ToolRefusedError, UnboundedArgumentError, current_call
from .catalogue import Match, Policy
from .consent import input_key
from .core import Guard
from .notify import Notify, handle_set_level
from .tasks import ask_user

__all__ = [
    "CallInfo",
    "Guard",
    "Match",
    "Notify",
    "Policy",
    "ToolRefusedError",
    "UnboundedArgumentError",
    "ask_user",
    "current_call",
    "handle_set_level",
    "input_key",
]
