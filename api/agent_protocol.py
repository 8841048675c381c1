"""The request fields agent frameworks send: tools, tool_choice, response_format, reasoning caps.

They are checked here and turned into what a job carries: the tools the chat template
shows the model, and the constraint (a grammar, built by the worker) that the answer must
follow. A schema the grammar library cannot compile is refused by the worker, whose verdict
the gateway answers with the same 400.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.errors import BadRequest
from shared.jobs import Constraint, ToolFunction
from shared.settings import Settings

# OpenAI's rule for function and schema names.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")


class RequestFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class RequestTool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    function: RequestFunction


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    description: str | None = None
    # OpenAI's field is "schema", which a pydantic model cannot use as an attribute name.
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


def check_tools(tools: list[RequestTool]) -> list[ToolFunction]:
    functions: list[ToolFunction] = []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if tool.type != "function":
            raise BadRequest(f"{where}.type must be 'function', not {tool.type!r}.", param=f"{where}.type")
        name = tool.function.name
        if not NAME_PATTERN.match(name):
            raise BadRequest(
                f"{where}.function.name must be 1-64 letters, digits, '_' or '-': {name!r}.",
                param=f"{where}.function.name",
            )
        if name in seen:
            raise BadRequest(
                f"{where}: the tool name {name!r} is used twice.", param=f"{where}.function.name"
            )
        seen.add(name)
        parameters = tool.function.parameters
        if parameters is not None and parameters.get("type", "object") != "object":
            raise BadRequest(
                f"{where}.function.parameters must be a JSON schema of an object.",
                param=f"{where}.function.parameters",
            )
        functions.append(ToolFunction(**tool.function.model_dump()))
    return functions


def tool_constraint(
    functions: list[ToolFunction], choice: ToolChoice | None, parallel: bool | None
) -> Constraint | None:
    """The grammar a tool_choice asks for: none for auto and none, a call for the others."""
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        named = [function for function in functions if function.name == name]
        if not named:
            raise BadRequest(
                f"tool_choice names the function {name!r}, which is not in 'tools'.", param="tool_choice"
            )
        return Constraint(kind="tool_calls", functions=named, parallel=False, param="tools")
    if choice == "required":
        if not functions:
            raise BadRequest(
                "tool_choice 'required' needs at least one tool in 'tools'.", param="tool_choice"
            )
        return Constraint(
            kind="tool_calls", functions=functions, parallel=parallel is not False, param="tools"
        )
    return None


def format_constraint(response_format: ResponseFormat | None) -> Constraint | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return Constraint(kind="json_object")
    spec = response_format.json_schema
    if spec is None:
        raise BadRequest(
            "response_format of type 'json_schema' needs a 'json_schema' object "
            "(response_format.json_schema).",
            param="response_format.json_schema",
        )
    if not NAME_PATTERN.match(spec.name):
        raise BadRequest(
            f"response_format.json_schema.name must be 1-64 letters, digits, '_' or '-': {spec.name!r}.",
            param="response_format.json_schema.name",
        )
    return Constraint(kind="json_schema", json_schema=spec.schema_ or {"type": "object"})


def thinking_budget(effort: str | None, budget: int | None, settings: Settings) -> int | None:
    """The reasoning cap: thinking_token_budget if given, else the one reasoning_effort maps to."""
    if budget is not None:
        return budget
    if effort is None:
        return None
    if effort not in REASONING_EFFORTS:
        raise BadRequest(
            f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}; got {effort!r}.",
            param="reasoning_effort",
        )
    budgets = {
        "none": 0,
        "minimal": settings.thinking_budget_minimal,
        "low": settings.thinking_budget_low,
        "medium": settings.thinking_budget_medium,
        "high": settings.thinking_budget_high,
    }
    return budgets[effort]
