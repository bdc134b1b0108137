"""The baseline: a bare MCPServer from the SDK serving the same tool, with none of the template's protections.

    # streamable_http_app() defaults: sessions + SSE
    python bench/bare_server.py http --port P --mode default
    # stateless_http=True, json_response=True (ours)
    python bench/bare_server.py http --port P --mode stateless
    python bench/bare_server.py stdio

uvicorn runs with the same settings as the rendered project's `serve` (app.serve_http).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from mcp.server import MCPServer

server = MCPServer("Bare")


@server.tool(name="whoami", title="Who am I")
async def whoami() -> str:
    """Tell the caller which identity and scopes this server sees for them."""
    return "principal: anonymous\nscopes: *"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["http", "stdio"])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--mode", choices=["default", "stateless"], default="default")
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
        return
    if args.mode == "default":
        app = server.streamable_http_app()
    else:
        app = server.streamable_http_app(stateless_http=True, json_response=True)
        # As the template does: without this the SDK logs a line per request, which costs a fifth.
        logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    serve_like_the_template(app, args.port)


def serve_like_the_template(app: Any, port: int) -> None:
    """uvicorn with the settings of the rendered project's `serve` (bench/peer_servers.py uses it too)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
