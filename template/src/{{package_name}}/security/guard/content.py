"""Binary content through the guard: images, audio, embedded resources and resource blobs.

A guarded tool or prompt may return MCP content blocks besides text, and a guarded resource may
return bytes. Every binary part is checked before it leaves: its data is valid base64, its MIME type
is one the item declared (`media_types=`) or, if it declared none, one of `DEFAULT_MEDIA_TYPES`, the
bytes look like that type where it has a known signature, all binary parts together fit in
`MCP_MAX_BINARY_BYTES`, and the decoded bytes hold no configured secret (plain, another case,
reversed, hex, base64; as single bytes or UTF-16: `Redactor.secret_in_bytes`). A part that fails a
check withholds the whole result with a short refusal, never a silently altered file. Text parts (an
embedded resource's text too) are fenced or capped like a text result, sharing one
`MCP_MAX_RESULT_CHARS` budget; the guard then sanitises every text as usual. Plain `str` results
never come here: they keep the text path (security/guard/results.py).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from mcp.server.mcpserver import Audio, Image, Message, UserMessage
from mcp.types import (
    AudioContent,
    BlobResourceContents,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)

from ..audit.redact import Redactor
from ..refusal import RefusedError
from .text import cap, fence

Part = str | ContentBlock | Image | Audio
ToolOutput = Part | Sequence[Part]
PromptOutput = Part | Message | Sequence[Part | Message]
ResourceOutput = str | bytes

DEFAULT_MAX_BINARY_BYTES = 1_048_576
# What a client can show or hand to a model without running it. Not here on purpose: image/svg+xml
# and text/html (they can carry scripts), and anything executable; an item that needs one declares it.
DEFAULT_MEDIA_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "audio/wav",
        "audio/mpeg",
        "audio/ogg",
        "audio/flac",
        "application/pdf",
        "application/json",
        "text/plain",
        "text/markdown",
        "text/csv",
    }
)
# The first bytes of each type that has a signature: a part labelled image/png must be a PNG.
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "audio/mpeg": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"),
    "audio/ogg": (b"OggS",),
    "audio/flac": (b"fLaC",),
    "application/pdf": (b"%PDF-",),
}
_RIFF = {"image/webp": b"WEBP", "audio/wav": b"WAVE"}


class ContentRefusedError(RefusedError):
    """A result part the guard will not send; the message is for the caller (short, no data).

    The item failed, not the request: the guard answers it as a failure of the tool, resource or prompt.
    """

    event = "tool_execution_failed"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, **details)


def media_types(declared: Sequence[str] | None) -> frozenset[str]:
    """The MIME types an item may return in binary parts and embedded resources."""
    if declared is None:
        return DEFAULT_MEDIA_TYPES
    return frozenset(_base_type(t) for t in declared)


def _base_type(mime_type: str) -> str:
    return mime_type.split(";", 1)[0].strip().lower()


def _looks_like(mime_type: str, data: bytes) -> bool:
    if mime_type in _RIFF:
        return data[:4] == b"RIFF" and data[8:12] == _RIFF[mime_type]
    signatures = _SIGNATURES.get(mime_type)
    return signatures is None or data.startswith(signatures)


class ContentCheck:
    """Checks the non-text results of one server's tools, resources and prompts."""

    def __init__(self, redactor: Redactor, max_result_chars: int, max_binary_bytes: int) -> None:
        self._redactor = redactor
        self._max_chars = max_result_chars
        self._max_bytes = max_binary_bytes

    def tool_result(
        self, item: str, result: Any, untrusted_output: str | None, allowed: frozenset[str]
    ) -> list[ContentBlock]:
        """A tool's content blocks, checked; raises ContentRefusedError for the whole result."""
        parts = list(result) if isinstance(result, list | tuple) else [result]
        return _Check(self, item, untrusted_output, allowed).blocks(parts)

    def prompt_messages(
        self, item: str, result: Any, untrusted_output: str | None, allowed: frozenset[str]
    ) -> list[Message]:
        """A prompt's messages (bare content is one user message each), checked."""
        check = _Check(self, item, untrusted_output, allowed)
        messages: list[Message] = []
        for entry in list(result) if isinstance(result, list | tuple) else [result]:
            if isinstance(entry, Message):
                messages.append(entry.model_copy(update={"content": check.blocks([entry.content])[0]}))
            else:
                messages.append(UserMessage(check.blocks([entry])[0]))
        return messages

    def resource_bytes(self, item: str, result: Any, mime_type: str, allowed: frozenset[str]) -> bytes:
        """A resource's bytes (sent as a base64 blob of its declared MIME type), checked."""
        if not isinstance(result, bytes):
            raise ContentRefusedError(
                f"{item} returned {type(result).__name__}; a guarded resource returns str or bytes.",
                reason="unsupported result type",
            )
        check = _Check(self, item, None, allowed)
        check.binary("blob", mime_type, base64.b64encode(result).decode())
        return result


class _Check:
    """One result being checked: the text budget and binary bytes it has used so far."""

    def __init__(
        self, guard: ContentCheck, item: str, untrusted_output: str | None, allowed: frozenset[str]
    ) -> None:
        self._guard = guard
        self._item = item
        self._untrusted = untrusted_output
        self._allowed = allowed
        self._chars_left = guard._max_chars
        self._bytes = 0

    def blocks(self, parts: list[Any]) -> list[ContentBlock]:
        out: list[ContentBlock] = []
        for part in parts:
            if isinstance(part, Image):
                part = part.to_image_content()
            elif isinstance(part, Audio):
                part = part.to_audio_content()
            if isinstance(part, str):
                out.append(TextContent(type="text", text=self.text(part)))
            elif isinstance(part, TextContent):
                out.append(part.model_copy(update={"text": self.text(part.text)}))
            elif isinstance(part, ImageContent | AudioContent):
                self.binary(part.type, part.mime_type, part.data)
                out.append(part)
            elif isinstance(part, EmbeddedResource):
                out.append(part.model_copy(update={"resource": self.embedded(part.resource)}))
            else:
                kind = getattr(part, "type", type(part).__name__)
                raise ContentRefusedError(
                    f"{self._item} returned a {kind} part; the guard carries text, image, audio and "
                    "embedded resources only, so the result was withheld.",
                    reason="unsupported content",
                    part=str(kind)[:40],
                )
        return out

    def text(self, text: str) -> str:
        """A text part, fenced or capped within what is left of the result's character budget."""
        limit = max(self._chars_left, 0)
        self._chars_left -= len(text)
        if self._untrusted is not None:
            return fence(text, self._untrusted, limit)
        return cap(text, limit)

    def embedded(
        self, resource: TextResourceContents | BlobResourceContents
    ) -> TextResourceContents | BlobResourceContents:
        mime_type = resource.mime_type
        if isinstance(resource, BlobResourceContents):
            self.binary("embedded resource", mime_type, resource.blob)
            return resource
        self._check_type("embedded resource", mime_type)
        return resource.model_copy(update={"text": self.text(resource.text)})

    def binary(self, kind: str, mime_type: str | None, data: str) -> None:
        """Refuse a binary part that is not valid base64, of an undeclared type, over the cap or a leak."""
        base = self._check_type(kind, mime_type)
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ContentRefusedError(
                f"{self._item} returned {kind} data that is not valid base64; the result was withheld.",
                reason="invalid base64",
                part=kind,
            ) from None
        self._bytes += len(raw)
        limit = self._guard._max_bytes
        if self._bytes > limit:
            raise ContentRefusedError(
                f"{self._item} returned more than {limit} bytes of binary content (MCP_MAX_BINARY_BYTES); "
                "the result was withheld.",
                reason="binary content over the limit",
                limit=limit,
            )
        if not _looks_like(base, raw):
            raise ContentRefusedError(
                f"{self._item} returned {kind} content labelled {base} that is not {base} data; "
                "the result was withheld.",
                reason="content does not match its MIME type",
                media_type=base,
            )
        if self._guard._redactor.secret_in_bytes(raw):
            raise ContentRefusedError(
                f"{self._item} returned {kind} content that contains a configured secret; "
                "the result was withheld.",
                reason="configured secret in binary content",
                media_type=base,
            )

    def _check_type(self, kind: str, mime_type: str | None) -> str:
        base = _base_type(mime_type or "")
        if base not in self._allowed:
            allowed = ", ".join(sorted(self._allowed))
            raise ContentRefusedError(
                f"{self._item} returned {kind} content of type {base or '(none)'}, which it may not "
                f"return (allowed: {allowed}; the item declares others with media_types=...); "
                "the result was withheld.",
                reason="media type not allowed",
                media_type=base[:100],
            )
        return base
