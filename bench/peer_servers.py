"""The servers bench/peers.py compares the template with, beside bench/bare_server.py's bare SDK.

    python bench/peer_servers.py fastmcp --port P --token T   # FastMCP with what it offers for the job
    python bench/peer_servers.py starlette --port P            # the ceiling of one Python process

FastMCP 4.2.3 (the `peers` dependency group) is configured with its own parts for what the template does:
a bearer-token verifier (StaticTokenVerifier: one token, as the template has one key), per-client rate
limiting at a limit that is not reached, structured logging of every message, error masking and its
Host/Origin protection, in the template's transport mode (stateless, JSON answers). The Starlette server
answers `ping` and `tools/call whoami` from one JSON route: no MCP stack, no protection.
uvicorn runs with the same settings as the rendered project's `serve` (bare_server.serve_like_the_template).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from bare_server import serve_like_the_template

WHOAMI = "principal: anonymous\nscopes: *"


def fastmcp_app(token: str) -> Any:
    from fastmcp import FastMCP
    from fastmcp.server.auth.providers.jwt import StaticTokenVerifier
    from fastmcp.server.middleware.error_handling import ErrorHandlingMiddleware
    from fastmcp.server.middleware.logging import StructuredLoggingMiddleware
    from fastmcp.server.middleware.rate_limiting import RateLimitingMiddleware

    verifier = StaticTokenVerifier(tokens={token: {"client_id": "bench", "scopes": ["tools"]}})
    server = FastMCP("Peer", auth=verifier, mask_error_details=True)
    server.add_middleware(ErrorHandlingMiddleware(include_traceback=False))
    server.add_middleware(RateLimitingMiddleware(max_requests_per_second=10_000, burst_capacity=20_000))
    server.add_middleware(StructuredLoggingMiddleware(include_payloads=False))

    @server.tool(name="whoami", title="Who am I")
    async def whoami() -> str:
        """Tell the caller which identity and scopes this server sees for them."""
        return WHOAMI

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    return server.http_app(
        path="/mcp",
        stateless_http=True,
        json_response=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*"],
    )


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def mcp(request: Request) -> JSONResponse:
        message = json.loads(await request.body())
        if message.get("method") == "tools/call":
            result: dict[str, Any] = {"content": [{"type": "text", "text": WHOAMI}], "isError": False}
        else:
            result = {}
        return JSONResponse({"jsonrpc": "2.0", "id": message.get("id"), "result": result})

    return Starlette(routes=[Route("/mcp", mcp, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", choices=["fastmcp", "starlette"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default="")
    args = parser.parse_args()
    app = fastmcp_app(args.token) if args.server == "fastmcp" else starlette_app()
    serve_like_the_template(app, args.port)


if __name__ == "__main__":
    main()
