"""The conformance suite's fixtures, registered through the guard: test code only, never rendered.

tests/test_conformance.py writes SOURCE into a rendered project as tools/conformance_fixtures.py, the way
a user adds a module (support.tooling.add_tool_module), so each fixture tool, resource and prompt gets
every guard defence and the suite judges the real paths: the consent path of a destructive tool (the
guard asks, the SDK seals requestState), resources and prompts through @guard.resource / @guard.prompt.
Fixtures whose wire shape the guard does not produce on purpose (image/audio/binary content, log and
progress notifications) are listed with reasons in
conformance-expected-failures.yml.
"""

SOURCE = '''"""Fixtures of the MCP conformance suite (test-only)."""

from __future__ import annotations

import json
from typing import Annotated

from mcp.server.mcpserver import Resolve, Sample
from mcp.types import CreateMessageResult, SamplingMessage, TextContent
from pydantic import Field

from ..security.guard import Guard, ToolRefusedError
from ..settings import Settings

Short = Annotated[str, Field(max_length=200)]


async def ask_the_model() -> Sample:
    """A sampling question, asked only of a client that declared sampling (the SDK checks)."""
    return Sample(
        [SamplingMessage(role="user", content=TextContent(type="text", text="Say yes."))], max_tokens=8
    )


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True, name="test_simple_text")
    async def simple_text() -> str:
        """Return a fixed text (conformance fixture)."""
        return "This is a simple text response for testing."

    @guard.tool(read_only=True, name="test_error_handling")
    async def error_handling() -> str:
        """Always fail (conformance fixture)."""
        raise ToolRefusedError("This tool intentionally returns an error for testing")

    @guard.tool(read_only=False, destructive=True, name="test_input_required_result_tampered_state")
    async def tampered_state() -> str:
        """Run only after the user confirms (conformance fixture for sealed requestState)."""
        return "confirmed"

    # Destructive and sampling: a client that declares sampling but not elicitation must get the
    # sampling question only, never the guard's confirmation (which it could not answer).
    @guard.tool(read_only=False, destructive=True, name="test_input_required_result_capabilities")
    async def capabilities(sampled: Annotated[CreateMessageResult, Resolve(ask_the_model)]) -> str:
        """Sample the model, then run only after the user confirms (conformance fixture)."""
        return "sampled and confirmed"

    @guard.resource("test://static-text", name="static_text")
    async def static_text() -> str:
        """A fixed text resource (conformance fixture)."""
        return "This is the content of the static text resource."

    @guard.resource("test://template/{id}/data", name="template_data", mime_type="application/json")
    async def template_data(id: Short) -> str:  # noqa: A002 (the suite names the variable)
        """A resource template that substitutes its id (conformance fixture)."""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @guard.prompt(name="test_simple_prompt")
    async def simple_prompt() -> str:
        """A prompt without arguments (conformance fixture)."""
        return "This is a simple prompt for testing."

    @guard.prompt(name="test_prompt_with_arguments")
    async def prompt_with_arguments(arg1: Short, arg2: Short) -> str:
        """A prompt with two arguments (conformance fixture)."""
        return f"Prompt with arguments: arg1={arg1!r}, arg2={arg2!r}"
'''


# ---- s5d: questions (elicitation, sampling, roots) through the SDK's resolvers -------------------------
# Written as its own module, tools/conformance_questions.py. Each question is a resolver the guard lets
# the SDK fill (a mid-call request for initialize-era clients, an input-required result and a retry with
# the sealed requestState from 2026-07-28 on); `input_key` gives it the name the suite asks for.
QUESTIONS = '''"""Conformance fixtures that ask the client: elicitation, sampling, roots (test-only)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Elicit, ListRoots, Resolve, Sample
from mcp.types import CreateMessageResult, ListRootsResult, SamplingMessage, TextContent
from pydantic import BaseModel, Field, WithJsonSchema

from ..security.guard import Guard, input_key
from ..settings import Settings

Short = Annotated[str, Field(max_length=200)]
MODEL = "the client's model"  # sampled text is fenced as data from there


class Name(BaseModel):
    name: Short


class Color(BaseModel):
    color: Short


class Confirm(BaseModel):
    ok: bool


class PromptContext(BaseModel):
    context: Short


class UserInfo(BaseModel):
    username: Short = Field(description="User's response")
    email: Short = Field(description="User's email address")


class Defaults(BaseModel):
    name: Short = Field("John Doe", description="User name")
    age: Annotated[int, Field(ge=0, le=200)] = Field(30, description="User age")
    score: Annotated[float, Field(ge=0, le=100)] = Field(95.5, description="User score")
    status: Literal["active", "inactive", "pending"] = Field("active", description="User status")
    verified: bool = Field(True, description="Verification status")


def _titled(options: dict[str, str]) -> list[dict[str, str]]:
    return [{"const": value, "title": title} for value, title in options.items()]


class Enums(BaseModel):
    untitledSingle: Literal["option1", "option2", "option3"]  # noqa: N815 (the suite names the fields)
    titledSingle: Annotated[  # noqa: N815
        Literal["value1", "value2", "value3"],
        WithJsonSchema(
            {"type": "string", "oneOf": _titled(
                {"value1": "First Option", "value2": "Second Option", "value3": "Third Option"}
            )}
        ),
    ]
    legacyEnum: Annotated[  # noqa: N815
        Literal["opt1", "opt2", "opt3"],
        Field(json_schema_extra={"enumNames": ["Option One", "Option Two", "Option Three"]}),
    ]
    untitledMulti: Annotated[  # noqa: N815
        list[Literal["option1", "option2", "option3"]], Field(max_length=3)
    ]
    titledMulti: Annotated[  # noqa: N815
        list[Literal["value1", "value2", "value3"]],
        Field(max_length=3),
        WithJsonSchema(
            {"type": "array", "items": {"anyOf": _titled(
                {"value1": "First Choice", "value2": "Second Choice", "value3": "Third Choice"}
            )}}
        ),
    ]


def _text(sampled: CreateMessageResult) -> str:
    return sampled.content.text if isinstance(sampled.content, TextContent) else "(not text)"


def _answered(result: ElicitationResult[BaseModel]) -> str:
    content = result.data.model_dump(mode="json") if isinstance(result, AcceptedElicitation) else {}
    return f"action={result.action}, content={json.dumps(content, sort_keys=True)}"


@input_key("user_name")
async def ask_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


@input_key("capital_question")
async def ask_capital() -> Sample:
    text = TextContent(type="text", text="What is the capital of France?")
    return Sample([SamplingMessage(role="user", content=text)], max_tokens=100)


@input_key("greeting")
async def ask_greeting() -> Sample:
    text = TextContent(type="text", text="Generate a greeting")
    return Sample([SamplingMessage(role="user", content=text)], max_tokens=50)


@input_key("client_roots")
async def ask_roots() -> ListRoots:
    return ListRoots()


@input_key("confirm")
async def ask_confirm() -> Elicit[Confirm]:
    return Elicit("Please confirm", Confirm)


@input_key("step1")
async def ask_step1() -> Elicit[Name]:
    return Elicit("Step 1: What is your name?", Name)


@input_key("step2")
async def ask_step2(name: Annotated[Name, Resolve(ask_step1)]) -> Elicit[Color]:
    # Depends on step 1, so it is asked in the round after step 1 is answered.
    return Elicit("Step 2: What is your favorite color?", Color)


@input_key("user_context")
async def ask_context() -> Elicit[PromptContext]:
    return Elicit("What context should the prompt use?", PromptContext)


async def ask_user_info(message: Short) -> Elicit[UserInfo]:
    return Elicit(message, UserInfo)


async def ask_model(prompt: Short) -> Sample:
    text = TextContent(type="text", text=prompt)
    return Sample([SamplingMessage(role="user", content=text)], max_tokens=100)


async def ask_defaults() -> Elicit[Defaults]:
    return Elicit("Test client default value handling - please accept with defaults", Defaults)


async def ask_enums() -> Elicit[Enums]:
    return Elicit("Choose from each kind of list", Enums)


def register(guard: Guard, settings: Settings) -> None:
    # 2026-07-28: input-required results (SEP-2322), under the suite's own keys.
    @guard.tool(read_only=True, name="test_input_required_result_elicitation")
    async def elicitation(answer: Annotated[Name, Resolve(ask_name)]) -> str:
        """Ask the user's name, then greet them (conformance fixture)."""
        return f"Hello, {answer.name}!"

    @guard.tool(read_only=True, name="test_input_required_result_sampling", untrusted_output=MODEL)
    async def sampling(answer: Annotated[CreateMessageResult, Resolve(ask_capital)]) -> str:
        """Ask the client's model a question (conformance fixture)."""
        return _text(answer)

    @guard.tool(read_only=True, name="test_input_required_result_list_roots")
    async def list_roots(roots: Annotated[ListRootsResult, Resolve(ask_roots)]) -> str:
        """List the client's roots (conformance fixture)."""
        return "Roots: " + ", ".join(str(root.uri) for root in roots.roots[:20])

    @guard.tool(read_only=True, name="test_input_required_result_request_state")
    async def request_state(answer: Annotated[Confirm, Resolve(ask_confirm)]) -> str:
        """Ask for a confirmation carried in the sealed requestState (conformance fixture)."""
        return f"state-ok: the sealed requestState was verified; ok={answer.ok}"

    @guard.tool(read_only=True, name="test_input_required_result_multiple_inputs", untrusted_output=MODEL)
    async def multiple_inputs(
        name: Annotated[Name, Resolve(ask_name)],
        greeting: Annotated[CreateMessageResult, Resolve(ask_greeting)],
        roots: Annotated[ListRootsResult, Resolve(ask_roots)],
    ) -> str:
        """Ask three questions in one round (conformance fixture)."""
        return f"{name.name}: {_text(greeting)} ({len(roots.roots)} roots)"

    @guard.tool(read_only=True, name="test_input_required_result_multi_round")
    async def multi_round(
        name: Annotated[Name, Resolve(ask_step1)], color: Annotated[Color, Resolve(ask_step2)]
    ) -> str:
        """Ask two questions, one per round (conformance fixture)."""
        return f"{name.name} likes {color.color}"

    @guard.prompt(name="test_input_required_result_prompt")
    async def prompt(context: Annotated[PromptContext, Resolve(ask_context)]) -> str:
        """A prompt that asks the user first (conformance fixture)."""
        return f"Use this context: {context.context}"

    # 2025-11-25: the same resolvers, asked mid-call over the session.
    @guard.tool(read_only=True, name="test_elicitation")
    async def elicit(
        message: Short, answer: Annotated[ElicitationResult[UserInfo], Resolve(ask_user_info)]
    ) -> str:
        """Ask the user for a name and an email address (conformance fixture)."""
        return "User response: " + _answered(answer)

    @guard.tool(read_only=True, name="test_sampling", untrusted_output=MODEL)
    async def sample(prompt: Short, answer: Annotated[CreateMessageResult, Resolve(ask_model)]) -> str:
        """Ask the client's model (conformance fixture)."""
        return "LLM response: " + _text(answer)

    @guard.tool(read_only=True, name="test_elicitation_sep1034_defaults")
    async def defaults(answer: Annotated[ElicitationResult[Defaults], Resolve(ask_defaults)]) -> str:
        """Ask with a default for every primitive type (conformance fixture)."""
        return "Elicitation completed: " + _answered(answer)

    @guard.tool(read_only=True, name="test_elicitation_sep1330_enums")
    async def enums(answer: Annotated[ElicitationResult[Enums], Resolve(ask_enums)]) -> str:
        """Ask with each kind of enum (conformance fixture)."""
        return "Elicitation completed: " + _answered(answer)
'''


# ---- s5e: content fixtures (images, audio, embedded resources, blobs), a module of their own ---------
# Registered as tools/conformance_content.py: every binary part passes security/guard/content.py (MIME type
# allowed, valid base64, signature, MCP_MAX_BINARY_BYTES, no configured secret), every text is fenced
# or capped and sanitised, exactly as for a user's tool.
CONTENT_SOURCE = '''"""Content fixtures of the MCP conformance suite (test-only)."""

from __future__ import annotations

import base64
import json
from typing import Annotated

from typing import Literal

from mcp.server.mcpserver import Message, UserMessage
from mcp.types import (
    AudioContent,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)
from pydantic import BaseModel, ConfigDict, Field

from ..security.guard import Guard
from ..settings import Settings

# A 1x1 PNG and a 1 ms WAV (8 kHz, 8-bit mono), both real files.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
WAV = "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA=="


Short = Annotated[str, Field(max_length=200)]


class address(BaseModel):  # noqa: N801 (the suite looks for the definition "address")
    """A postal address; its schema definition carries an $anchor (JSON Schema 2020-12)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"$anchor": "addressDef"})
    street: Short | None = None
    city: Short | None = None


# The suite's cross-field rules: a phone or an email, and the phone when contactMethod is phone.
CONTACT_RULES = {
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
}


def image() -> ImageContent:
    return ImageContent(type="image", data=PNG, mime_type="image/png")


def embedded(uri: str, text: str, mime_type: str = "text/plain") -> EmbeddedResource:
    return EmbeddedResource(
        type="resource", resource=TextResourceContents(uri=uri, mime_type=mime_type, text=text)
    )


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True, name="test_image_content")
    async def image_content() -> ImageContent:
        """Return a PNG image (conformance fixture)."""
        return image()

    @guard.tool(read_only=True, name="test_audio_content")
    async def audio_content() -> AudioContent:
        """Return a WAV sound (conformance fixture)."""
        return AudioContent(type="audio", data=WAV, mime_type="audio/wav")

    @guard.tool(read_only=True, name="test_embedded_resource")
    async def embedded_resource() -> EmbeddedResource:
        """Return an embedded text resource (conformance fixture)."""
        return embedded("test://embedded-resource", "This is an embedded resource content.")

    @guard.tool(read_only=True, name="test_multiple_content_types")
    async def multiple_content_types() -> list[ContentBlock]:
        """Return text, an image and an embedded resource (conformance fixture)."""
        data = json.dumps({"test": "data", "value": 123})
        return [
            TextContent(type="text", text="Multiple content types test:"),
            image(),
            embedded("test://mixed-content-resource", data, "application/json"),
        ]

    @guard.resource("test://static-binary", name="static_binary", mime_type="image/png")
    async def static_binary() -> bytes:
        """A fixed PNG resource, read as a blob (conformance fixture)."""
        return base64.b64decode(PNG)

    @guard.prompt(name="test_prompt_with_embedded_resource")
    async def prompt_with_embedded_resource(
        resourceUri: Annotated[str, Field(max_length=200)],  # noqa: N803
    ) -> list[Message]:
        """A prompt that embeds a resource (conformance fixture; the suite names the argument)."""
        return [
            UserMessage(embedded(resourceUri, "Embedded resource content for testing.")),
            UserMessage("Please process the embedded resource above."),
        ]

    @guard.tool(read_only=True, name="json_schema_2020_12_tool", schema_keywords=CONTACT_RULES)
    async def json_schema_tool(
        name: Short | None = None,
        address: address | None = None,
        contactMethod: Literal["phone", "email"] | None = None,  # noqa: N803
        phone: Short | None = None,
        email: Short | None = None,
    ) -> str:
        """Take a contact whose rules are JSON Schema 2020-12 keywords (conformance fixture)."""
        return "ok"

    @guard.prompt(name="test_prompt_with_image")
    async def prompt_with_image() -> list[Message]:
        """A prompt with an image (conformance fixture)."""
        return [UserMessage(image()), UserMessage("Please analyze the image above.")]
'''


# ---- s5f: notifications, streams, request headers --------------------------------------------------
# A second module (tools/conformance_streams.py): progress and log lines through the guard's Notify,
# a tool that needs a capability the client did not declare, a question on the 2026-07-28 answer
# stream, an x-mcp-header argument (SEP-2243, checked by the SDK against the Mcp-Param-* header).
STREAMS_SOURCE = '''"""Fixtures of the MCP conformance suite: notifications, streams, request headers
(test-only)."""

from __future__ import annotations

from typing import Annotated

import anyio
from mcp.server.mcpserver import Context, Resolve, Sample
from mcp.types import CreateMessageResult, SamplingMessage, TextContent
from pydantic import Field

from ..security.guard import Guard, Notify
from ..settings import Settings

Region = Annotated[str, Field(max_length=100, json_schema_extra={"x-mcp-header": "Region"})]


async def sample() -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text="Hi"))], max_tokens=8)


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True, name="test_tool_with_logging")
    async def with_logging(notify: Notify) -> str:
        """Send three log lines while it runs (conformance fixture)."""
        await notify.info("Tool execution started")
        await anyio.sleep(0.05)
        await notify.info("Tool processing data")
        await anyio.sleep(0.05)
        await notify.info("Tool execution completed")
        return "Tool with logging executed successfully"

    @guard.tool(read_only=True, name="test_logging_tool")
    async def logging_tool(notify: Notify) -> str:
        """Send one log line (conformance fixture: sent only to a client that asked for log lines)."""
        await notify.info("Logging tool ran")
        return "logged"

    @guard.tool(read_only=True, name="test_tool_with_progress")
    async def with_progress(notify: Notify) -> str:
        """Report progress 0, 50, 100 of 100 while it runs (conformance fixture)."""
        for step in (0, 50, 100):
            await notify.progress(step, 100)
            if step < 100:
                await anyio.sleep(0.05)
        return "Tool with progress executed successfully"

    @guard.tool(read_only=True, name="test_missing_capability")
    async def missing_capability(answer: Annotated[CreateMessageResult, Resolve(sample)]) -> str:
        """Needs sampling: refused with -32021 for a client that did not declare it (conformance fixture)."""
        return "sampled"

    @guard.tool(read_only=False, destructive=True, name="test_streaming_elicitation")
    async def streaming_elicitation() -> str:
        """Runs after the user confirms; the question is an input-required result (conformance fixture)."""
        return "confirmed"

    @guard.tool(read_only=True, name="test_custom_header")
    async def custom_header(region: Region) -> str:
        """Echo a region that the client also sends as the Mcp-Param-Region header (conformance fixture)."""
        return f"region: {region}"

    @guard.tool(read_only=True, name="test_reconnection")
    async def reconnection(ctx: Context) -> str:
        """End the call's SSE stream mid-call; the client gets the answer by replay (conformance fixture)."""
        await ctx.close_sse_stream()
        await anyio.sleep(0.1)
        return "Reconnection test completed"

    @guard.resource("test://watched-resource", name="watched_resource")
    async def watched_resource() -> str:
        """A resource a client may subscribe to (conformance fixture)."""
        return "watched"
'''


# ---- the tasks extension (SEP-2663): tools that run as tasks, through the guard ------------------------
# Written as tools/conformance_tasks.py. Each fixture is what the tasks-* scenarios name; confirm_delete
# is destructive, so the guard's own confirmation is what the task asks through tasks/update.
TASKS_SOURCE = '''"""Fixtures of the MCP conformance suite: the tasks extension (test-only)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Elicit, Resolve
from pydantic import BaseModel, Field

from ..security.guard import Guard, ToolRefusedError, ask_user, input_key
from ..settings import Settings

Short = Annotated[str, Field(max_length=200)]


class Name(BaseModel):
    name: Short


class NameAndConfirm(BaseModel):
    name: Short = ""
    confirm: bool = False


@input_key("user_name")
async def ask_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True, name="greet")
    async def greet(name: Short) -> str:
        """Greet someone (conformance fixture, never a task)."""
        return f"Hello, {name}!"

    @guard.tool(read_only=True, name="slow_compute", task="optional", timeout=120)
    async def slow_compute(seconds: Annotated[int, Field(ge=0, le=60)], label: Short = "") -> str:
        """Sleep, then answer (conformance fixture; runs as a task)."""
        await asyncio.sleep(seconds)
        return f"computed {label} after {seconds}s"

    @guard.tool(read_only=True, name="failing_job", task="required")
    async def failing_job() -> str:
        """Fail as a tool after a second (conformance fixture; only as a task)."""
        await asyncio.sleep(1)
        raise ToolRefusedError("failing_job failed on purpose")

    @guard.tool(read_only=True, name="protocol_error_job", task="optional")
    async def protocol_error_job() -> str:
        """Crash (conformance fixture; a failed task)."""
        raise RuntimeError("a crash inside the tool")

    @guard.tool(read_only=False, destructive=True, name="confirm_delete", task="optional")
    async def confirm_delete(filename: Short) -> str:
        """Delete a file once the user confirms (conformance fixture; nothing is deleted)."""
        return f"deleted {filename}"

    @guard.tool(read_only=True, name="multi_input", task="optional")
    async def multi_input() -> str:
        """Ask two questions at once while running as a task (conformance fixture)."""
        first, second = await asyncio.gather(
            ask_user("First name?", NameAndConfirm), ask_user("Second name?", NameAndConfirm)
        )
        names = [a.data.name for a in (first, second) if isinstance(a, AcceptedElicitation)]
        return f"got {', '.join(names)}"

    @guard.tool(read_only=True, name="test_tool_with_task", task="required")
    async def tool_with_task(answer: Annotated[Name, Resolve(ask_name)]) -> str:
        """Ask the user's name first, then run as a task (conformance fixture)."""
        await asyncio.sleep(0.2)
        return f"Hello, {answer.name}, from a task!"
'''
