"""The SDK's answer to a body that is not JSON-RPC, without the parser's text.

For a body that does not parse or validate, the SDK's Streamable HTTP app answers 400 with
"Parse error: ..." or "Validation error: ..." followed by pydantic's message, which quotes the
rejected input and links the pydantic version's documentation. This layer keeps the status and the
JSON-RPC code and replaces the message with a fixed one.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MESSAGES = {
    "Parse error": "Parse error: the body is not JSON",
    "Validation error": "Invalid request: the body is not a JSON-RPC 2.0 message this server accepts",
}
_MAX_BODY = 65_536  # the SDK's error answers are small; anything larger passes through untouched


class CleanJsonRpcErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_clean(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] == 400:
                start = message  # held until the body shows whether it is a parser's error
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False) and sum(map(len, chunks)) < _MAX_BODY:
                return
            body = _cleaned(b"".join(chunks))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send(
                {"type": "http.response.body", "body": body, "more_body": message.get("more_body", False)}
            )
            start = None

        await self.app(scope, receive, send_clean)


def _cleaned(body: bytes) -> bytes:
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return body
    message: str = error["message"]
    for prefix, fixed in _MESSAGES.items():
        if message.startswith(prefix):
            error["message"] = fixed
            error.pop("data", None)
            return json.dumps(answer, separators=(",", ":")).encode()
    return body
