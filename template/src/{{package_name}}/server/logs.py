"""Log lines on stderr: one plain format when stderr is not a terminal, and no routine line dressed up as a
problem.

On a terminal the SDK (with `rich`, if installed) and the HTTP server format their lines for a person.
Anywhere else (a service manager, a container, a file) every line has one format and is never wrapped:
`<time> <LEVEL> <logger>: <message>`; security events stay one JSON object per line (audit/events.py).
Either way, unless MCP_LOG_LEVEL=DEBUG, lines that report normal operation as if it were a problem stay
out: the SDK's session managers starting and stopping (and, over HTTP, the server's line about an app
without a lifespan: transport/http/app.py).
"""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PlainFormatter(logging.Formatter):
    """FORMAT, with each second's timestamp text made once: an HTTP server writes a line per request."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._text, self._second = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)), second
        return f"{self._text},{int(record.msecs):03d}"


def plain() -> bool:
    """Whether stderr gets the one plain format (it is not a terminal)."""
    return not sys.stderr.isatty()


def configure_logging(level: str) -> None:
    """Before the server is built: the SDK's logging setup then finds the root logger configured and
    leaves it; the HTTP server is told to leave it too (transport/http/app.py)."""
    if level != "DEBUG":
        logging.getLogger("mcp.server.streamable_http_manager").setLevel(logging.WARNING)
    if not plain():
        return
    # Nothing in FORMAT reads which process or thread logged a line: the logging HOWTO's "Optimization"
    # switches save looking them up for every line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PlainFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
