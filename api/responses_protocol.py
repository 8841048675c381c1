"""The Responses API request, and its translation into a chat completion of the same session.

A response runs as a chat-completion job: its input items become chat messages (with the
instructions first, and the conversation of ``previous_response_id`` before them), its
fields the chat fields they correspond to, and the checks of chat completions apply
unchanged. Their errors are renamed to the Responses request's own fields (``input[2]``
rather than ``messages[3]``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.errors import BadRequest
from api.protocol import ChatCompletionRequest, refuse_unsupported
from shared.responses import ResponseSpec

# Fields this server does not honour: a 400 naming them (when they ask for something).
UNSUPPORTED_FIELDS = ("conversation", "prompt", "max_tool_calls", "top_logprobs", "include")
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {"include": ([],), "top_logprobs": (0,)}
TEXT_PART_TYPES = ("input_text", "output_text", "text", "refusal")
MEDIA_PART_TYPES = ("input_image", "input_video", "image_url", "video_url")
_MESSAGES_PARAM = re.compile(r"^messages[\[.](\d+)\]?(.*)$")


class ReasoningOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    effort: str | None = None
    summary: str | None = None


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: dict[str, Any] | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: str | list[dict[str, Any]]
    model: str | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool = False
    background: bool = False
    store: bool = True
    metadata: dict[str, str] | None = None
    reasoning: ReasoningOptions | None = None
    text: TextOptions | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    truncation: str | None = None
    # Extensions, as in chat completions.
    seed: int | None = None
    top_k: int | None = None
    thinking_token_budget: int | None = Field(None, ge=0)

    def refuse_unsupported(self) -> None:
        refuse_unsupported(self.model_extra, UNSUPPORTED_FIELDS, NEUTRAL_VALUES)
        if self.truncation not in (None, "disabled", "auto"):
            raise BadRequest("'truncation' must be 'auto' or 'disabled'.", param="truncation")
        if self.background and not self.store:
            raise BadRequest("A background response must be stored ('store': true).", param="background")

    def spec(self, input_items: list[dict[str, Any]]) -> ResponseSpec:
        return ResponseSpec(
            instructions=self.instructions,
            max_output_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            metadata=self.metadata or {},
            tools=self.tools or [],
            tool_choice=self.tool_choice or "auto",
            parallel_tool_calls=self.parallel_tool_calls is not False,
            text=self.text.model_dump(exclude_none=True)
            if self.text and self.text.format
            else {"format": {"type": "text"}},
            reasoning=self.reasoning.model_dump() if self.reasoning else None,
            previous_response_id=self.previous_response_id,
            background=self.background,
            store=self.store,
            input_items=input_items,
        )


def input_items(request: ResponsesRequest) -> list[dict[str, Any]]:
    """The input as a list of items (a string is one user message)."""
    if isinstance(request.input, str):
        return [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": request.input}]}
        ]
    return request.input


def _content(where: str, content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where} must be a string or a list of content parts.", param=where)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        part_where = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PART_TYPES:
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise BadRequest(f"{part_where}: a {kind} part needs 'text'.", param=part_where)
            parts.append({"type": "text", "text": text})
        elif kind in MEDIA_PART_TYPES:
            parts.append(part)
        else:
            known = ", ".join(TEXT_PART_TYPES + MEDIA_PART_TYPES)
            raise BadRequest(
                f"{part_where}.type must be one of {known}; got {kind!r}.", param=f"{part_where}.type"
            )
    return parts


def _message(where: str, item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise BadRequest(
            f"{where}.role must be user, system, developer or assistant; got {role!r}.", param=f"{where}.role"
        )
    if "content" not in item:
        raise BadRequest(f"{where}.content is required.", param=f"{where}.content")
    return {"role": role, "content": _content(f"{where}.content", item["content"])}


def _function_call(where: str, item: dict[str, Any]) -> dict[str, Any]:
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str):
            raise BadRequest(f"{where}.{name} is required (a string).", param=f"{where}.{name}")
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def chat_messages(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Chat messages for the input items, and for each message the item it came from."""
    messages: list[dict[str, Any]] = []
    origins: list[str] = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(where, item))
        elif kind == "function_call":
            call = _function_call(where, item)
            previous = messages[-1] if messages else None
            if previous is not None and previous["role"] == "assistant":
                # Calls that follow an assistant turn belong to it.
                previous.setdefault("tool_calls", []).append(call)
                continue
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(item.get("call_id"), str) or output is None:
                raise BadRequest(f"{where} needs 'call_id' and 'output'.", param=where)
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item["call_id"],
                    "content": _content(f"{where}.output", output),
                }
            )
        elif kind == "reasoning":
            continue  # earlier reasoning is not shown to the model again (as the chat template does)
        else:
            raise BadRequest(
                f"{where}.type must be message, function_call, function_call_output or reasoning; "
                f"got {kind!r}.",
                param=f"{where}.type",
            )
        origins.append(where)
    return messages, origins


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for index, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise BadRequest(
                f"tools[{index}].type {tool.get('type')!r} is not supported: only function tools are.",
                param=f"tools[{index}].type",
            )
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
        converted.append({"type": "function", "function": function})
    return converted


def chat_tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise BadRequest(
                "tool_choice must be auto, none, required or a function by name.", param="tool_choice"
            )
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def chat_response_format(text: TextOptions | None) -> dict[str, Any] | None:
    if text is None or text.format is None:
        return None
    fmt = text.format
    kind = fmt.get("type")
    if kind == "json_schema":
        spec = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
        return {"type": "json_schema", "json_schema": spec}
    if kind in ("text", "json_object"):
        return {"type": kind}
    raise BadRequest(
        f"text.format.type must be text, json_object or json_schema; got {kind!r}.", param="text.format.type"
    )


def to_chat_request(
    request: ResponsesRequest, response_id: str, history: list[dict[str, Any]]
) -> tuple[ChatCompletionRequest, list[str]]:
    """The chat request a response runs as, and the origin of each of its messages.

    ``history`` is the conversation of ``previous_response_id`` (chat messages), if any.
    """
    messages, origins = chat_messages(input_items(request))
    if request.instructions is not None:
        messages.insert(0, {"role": "system", "content": request.instructions})
        origins.insert(0, "instructions")
    messages = history + messages
    origins = ["previous_response_id"] * len(history) + origins
    body: dict[str, Any] = {
        "messages": messages,
        "session_id": response_id,
        "stream": request.stream,
        "max_completion_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "top_k": request.top_k,
        "thinking_token_budget": request.thinking_token_budget,
        "reasoning_effort": request.reasoning.effort if request.reasoning else None,
        "response_format": chat_response_format(request.text),
        "tools": chat_tools(request.tools or []) or None,
        "tool_choice": chat_tool_choice(request.tool_choice),
        "parallel_tool_calls": request.parallel_tool_calls,
    }
    body = {key: value for key, value in body.items() if value is not None}
    try:
        return ChatCompletionRequest.model_validate(body), origins
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first.get("loc", ()))
        raise BadRequest(
            f"Invalid value for '{param}': {first.get('msg')}", param=rename_param(param, origins)
        ) from error
    except BadRequest as error:
        raise renamed(error, origins) from error


CHAT_TO_RESPONSES = {
    "messages": "input",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
}


def rename_param(param: str | None, origins: list[str]) -> str | None:
    """A chat request's parameter as the Responses request names it."""
    if param is None:
        return None
    match = _MESSAGES_PARAM.match(param)
    if match and int(match.group(1)) < len(origins):
        return origins[int(match.group(1))] + match.group(2)
    head, _, rest = param.partition(".")
    return CHAT_TO_RESPONSES.get(head, head) + (f".{rest}" if rest else "")


def renamed(error: BadRequest, origins: list[str]) -> BadRequest:
    """The same error, naming the Responses request's field."""
    return BadRequest(error.message, param=rename_param(error.param, origins), code=error.code)
