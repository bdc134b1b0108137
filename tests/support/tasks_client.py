"""A 2026-07-28 client of the tasks extension on the wire (test code): each request stateless, with the
`_meta` envelope and the SEP-2243 routing headers (Mcp-Method, Mcp-Name = the task id), as the
conformance suite's client sends them. mcp 2.3's client has no tasks support, so this is the client."""

from __future__ import annotations

import itertools
import time
from typing import Any

import anyio
import httpx2

EXTENSION = "io.modelcontextprotocol/tasks"
TERMINAL = ("completed", "failed", "cancelled")
_ids = itertools.count(1)


class TasksClient:
    def __init__(self, url: str, key: str, *, tasks: bool = True, elicitation: bool = True) -> None:
        self.url = url
        self.key = key
        capabilities: dict[str, Any] = {"extensions": {EXTENSION: {}}} if tasks else {}
        if elicitation:
            capabilities["elicitation"] = {}
        self.capabilities = capabilities

    async def send(self, method: str, params: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
        """The JSON-RPC response (with "result" or "error")."""
        body_params = {
            **params,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": self.capabilities,
                "io.modelcontextprotocol/clientInfo": {"name": "tasks-test", "version": "1"},
            },
        }
        headers = {
            "Authorization": f"Bearer {self.key}",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": method,
            "Accept": "application/json, text/event-stream",
        }
        named = name if name is not None else params.get("taskId", params.get("name"))
        if named is not None:
            headers["Mcp-Name"] = named
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": body_params}
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.post(self.url, json=body, headers=headers)
        answer: dict[str, Any] = response.json()
        return answer

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return await self.send("tools/call", {"name": tool, "arguments": arguments})

    async def get(self, task_id: str) -> dict[str, Any]:
        return await self.send("tasks/get", {"taskId": task_id})

    async def until(self, task_id: str, *statuses: str, seconds: float = 30) -> dict[str, Any]:
        """Poll at the advertised interval until the task reaches one of `statuses` (or ends)."""
        deadline = time.monotonic() + seconds
        while True:
            task = (await self.get(task_id))["result"]
            if task["status"] in statuses or task["status"] in TERMINAL or time.monotonic() > deadline:
                return task
            await anyio.sleep(task.get("pollIntervalMs", 1000) / 1000)
