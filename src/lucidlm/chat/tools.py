"""Tool use: a model asks for a function to be run, reads its result, and goes on with its reply.

The conversation speaks OpenAI's format. The caller offers tools, each
`{"type": "function", "function": {"name", "description", "parameters": JSON Schema}}`; an assistant message may
hold `tool_calls`, `[{"id", "type": "function", "function": {"name", "arguments": JSON text}}]`, and each result
comes back as a `{"role": "tool", "tool_call_id", "content"}` message. The chat template writes all of it for
the model (chat/template.py); what the model writes back is read here, in the two forms that the templates ask
for:
- lucidlm's own template: `<|call|>NAME(ARGUMENTS)`, ARGUMENTS a JSON object, one call after each `<|call|>`;
- the Hermes form that Qwen's and many other Hub templates ask for: `<tool_call>{"name": ..., "arguments": ...}
  </tool_call>`.

One tool is built in: `calculator`, arithmetic on real numbers (+ - * / // % ** and parentheses), parsed with
Python's own parser and then evaluated node by node over numbers alone, never by `eval`: anything else
(names, calls, attributes, strings) is refused, and the sizes are bounded (the expression's length, the
numbers' digits, a power's result), so a request cannot make it run for long or fill the memory. A result
that is not a real number (`(-8) ** 0.5`) is an error the model reads back, as division by zero is; no tool's
failure ends a chat or an eval.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lucidlm.errors import ConfigError
from lucidlm.inputs import parse_json

CALL_TOKEN = "<|call|>"  # opens a call in lucidlm's own template
TOOL_TOKEN = "<|tool|>"  # opens a tool's result in lucidlm's own template
TOOL_TOKENS = (TOOL_TOKEN, CALL_TOKEN)
HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
OWN_CALL = re.compile(r"\s*([A-Za-z_][\w.-]*)\((.*)\)\s*", re.DOTALL)
JSON_SCHEMA_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
CALL_MARKERS = (CALL_TOKEN, "<tool_call>")

# --- the calculator -----------------------------------------------------------------------------------------

MAX_EXPRESSION = 200  # characters
MAX_DIGITS = 100  # of any number along the way
OPERATORS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY: dict[type, Callable] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Arithmetic",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


class ToolError(ValueError):
    """What a tool says back, instead of a result, when it cannot do what was asked."""


def check_size(value: int | float | complex) -> int | float:
    if isinstance(value, complex):
        raise ToolError("the result is not a real number (the calculator works in real numbers)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is not a finite number")
    if isinstance(value, int) and abs(value) >= 10**MAX_DIGITS:
        raise ToolError(f"a number grew past {MAX_DIGITS} digits")
    return value


def evaluate_node(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return check_size(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](evaluate_node(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = evaluate_node(node.left), evaluate_node(node.right)
        # a power's size is bounded before it is computed: |left| ** right has about right * log10|left| digits
        # (a base of at most 1 in size, or a negative power, makes a number no larger than its base or 1)
        if isinstance(node.op, ast.Pow) and abs(left) > 1 and right * math.log10(abs(left)) >= MAX_DIGITS:
            raise ToolError(f"the power is too large (more than {MAX_DIGITS} digits)")
        try:
            value = OPERATORS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except (OverflowError, ValueError) as exc:  # 10.0 ** 400
            raise ToolError(f"the result is out of range ({exc})") from None
        return check_size(value)
    raise ToolError("only numbers, + - * / // % ** and parentheses are allowed")


def format_number(value: int | float) -> str:
    """An integer as its digits; a float as an integer where it is one, else to 12 significant digits."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


def calculate(expression: str) -> str:
    """The value of an arithmetic expression, as text. Raises ToolError for anything that is not arithmetic on
    numbers, or that would compute something too large."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("give an arithmetic expression, such as (12 - 4) * 3")
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError(f"{expression!r} is not an arithmetic expression") from None
    return format_number(evaluate_node(tree.body))


def calculator(arguments: dict) -> str:
    """The calculator tool: `{"expression": "..."}` -> its value."""
    if set(arguments) != {"expression"}:
        raise ToolError('the calculator takes {"expression": "..."} alone')
    return calculate(arguments["expression"])


BUILT_IN_TOOLS: dict[str, tuple[dict, Callable[[dict], str]]] = {"calculator": (CALCULATOR, calculator)}


def check_tool_names(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in BUILT_IN_TOOLS]
    if unknown:
        raise ConfigError(f"no built-in tool {', '.join(unknown)}; the tools are: {', '.join(BUILT_IN_TOOLS)}")


def built_in_tools(names: Sequence[str]) -> tuple[list[dict], dict[str, Callable[[dict], str]]]:
    """(the definitions a template offers, the functions that run the calls) of built-in tools, by name."""
    check_tool_names(names)
    return [BUILT_IN_TOOLS[name][0] for name in names], {name: BUILT_IN_TOOLS[name][1] for name in names}


# --- reading a reply's calls --------------------------------------------------------------------------------


@dataclass
class ToolCall:
    name: str
    arguments: dict
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or "call_" + secrets.token_hex(12)

    def message(self) -> dict:
        """The call as an assistant message's `tool_calls` entry (OpenAI's form: the arguments as JSON text)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


def read_call(text: str, hermes: bool) -> ToolCall | None:
    """One call as the model wrote it, or None where it is not a well-formed call."""
    if hermes:
        try:
            data = parse_json(text)
        except ValueError:
            return None
        name, arguments = (data.get("name"), data.get("arguments")) if isinstance(data, dict) else (None, None)
    else:
        match = OWN_CALL.fullmatch(text)
        if not match:
            return None
        name = match.group(1)
        try:
            arguments = parse_json(match.group(2))
        except ValueError:
            return None
    if isinstance(arguments, str):  # some models write the arguments as JSON text, as OpenAI's API carries them
        try:
            arguments = parse_json(arguments)
        except ValueError:
            return None
    if not isinstance(name, str) or not isinstance(arguments, dict):
        return None
    return ToolCall(name, arguments)


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(the reply's text before its calls, the calls) of what a model wrote. A reply whose calls are not all
    well-formed is text alone, as it was written."""
    starts = [index for index in (text.find(marker) for marker in CALL_MARKERS) if index >= 0]
    if not starts:
        return text, []
    start = min(starts)
    content, rest = text[:start], text[start:]
    if rest.startswith(CALL_TOKEN):
        pieces, hermes = rest.split(CALL_TOKEN)[1:], False
    else:
        pieces, hermes = HERMES_CALL.findall(rest), True
        if re.sub(HERMES_CALL, "", rest).strip():
            return text, []
    calls = [read_call(piece, hermes) for piece in pieces]
    if not calls or any(call is None for call in calls):
        return text, []
    return content, calls


# --- running them -------------------------------------------------------------------------------------------


def run_call(call: ToolCall, tools: dict[str, Callable[[dict], str]]) -> str:
    """A tool's result, or what went wrong, as the text the model reads back."""
    if call.name not in tools:
        return f"error: there is no tool {call.name!r}; the tools are: {', '.join(tools)}"
    try:
        return tools[call.name](call.arguments)
    except ToolError as exc:
        return f"error: {exc}"
    except Exception as exc:  # a tool's own bug fails that call, not the chat or the eval that made it
        return f"error: the tool {call.name} failed ({type(exc).__name__}: {exc})"


def tool_turns(content: str, calls: Sequence[ToolCall], tools: dict[str, Callable[[dict], str]]) -> list[dict]:
    """The assistant's message that made the calls, and a tool message with each call's result."""
    turns = [{"role": "assistant", "content": content, "tool_calls": [call.message() for call in calls]}]
    for call in calls:
        turns.append({"role": "tool", "tool_call_id": call.id, "content": run_call(call, tools)})
    return turns


def reply_with_tools(
    respond: Callable[[list[dict]], str],
    messages: list[dict],
    tools: dict[str, Callable[[dict], str]],
    rounds: int = 4,
    on_turn: Callable[[dict], None] | None = None,
) -> tuple[str, list[dict]]:
    """Ask for a reply to `messages`; while it calls tools (at most `rounds` times), run them, add the calls and
    their results to the conversation, and ask again. Returns (the final reply's text, the messages added, the
    final reply included). `on_turn` sees each added message as it comes (a chat shows the calls)."""
    added: list[dict] = []
    for round_number in range(rounds + 1):
        text = respond([*messages, *added])
        content, calls = parse_tool_calls(text)
        if not calls or round_number == rounds:
            break
        for turn in tool_turns(content, calls, tools):
            added.append(turn)
            if on_turn is not None:
                on_turn(turn)
    added.append({"role": "assistant", "content": text})
    return text, added


# --- conversations with tools -------------------------------------------------------------------------------


def uses_tools(messages: Sequence[dict], tools: Sequence[dict] | None = None) -> bool:
    """Whether a conversation offers tools, calls them or holds their results."""
    return bool(tools) or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def template_messages(messages: Sequence[dict]) -> list[dict]:
    """The messages as chat templates read them: a call's arguments as a dictionary (OpenAI's API carries them
    as JSON text), so that every template writes them its own way. Arguments that are not JSON stay text."""
    converted = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            calls = [
                {**call, "function": {**call["function"], "arguments": arguments_dict(call["function"]["arguments"])}}
                if isinstance(call, dict) and isinstance(call.get("function"), dict)
                else call
                for call in calls
            ]
            message = {**message, "tool_calls": calls}
        converted.append(message)
    return converted


def arguments_dict(arguments: object) -> object:
    if isinstance(arguments, str):
        try:
            parsed = parse_json(arguments)
        except ValueError:
            return arguments
        return parsed if isinstance(parsed, dict) else arguments
    return arguments


def tools_problem(tools: object) -> str | None:
    """What is wrong with a list of tool definitions in OpenAI's form, or None."""
    if not isinstance(tools, list):
        return '"tools" must be a list of {"type": "function", "function": {"name": ...}}'
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            return f'tools[{index}] is not {{"type": "function", "function": {{"name": ...}}}}'
        if not isinstance(function.get("name"), str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", function["name"]):
            return f"tools[{index}] needs a name of letters, digits, _ . or -"
        if not isinstance(function.get("description", ""), str | None):
            return f'tools[{index}]\'s "description" must be text'
        parameters = function.get("parameters", {})
        if not isinstance(parameters, dict) or not isinstance(parameters.get("properties", {}), dict):
            return f'tools[{index}]\'s "parameters" must be a JSON Schema object'
        for name, schema in parameters.get("properties", {}).items():
            where = f'tools[{index}]\'s parameter "{name}"'
            if not isinstance(schema, dict):
                return f"{where} must be a JSON Schema object"
            kind = schema.get("type", "string")
            kinds = kind if isinstance(kind, list) and kind else [kind]
            if not all(isinstance(k, str) and k in JSON_SCHEMA_TYPES for k in kinds):
                types = ", ".join(JSON_SCHEMA_TYPES)
                return f'{where} has "type" {json.dumps(kind)}; use one of {types}, or a list of them'
            if not isinstance(schema.get("description", ""), str):
                return f'{where}\'s "description" must be text'
    return None


def tool_calls_problem(calls: object) -> str | None:
    """What is wrong with an assistant message's `tool_calls`, or None."""
    if not isinstance(calls, list) or not calls:
        return '"tool_calls" must be a non-empty list'
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return f'tool_calls[{index}] is not {{"type": "function", "function": {{"name": ..., "arguments": ...}}}}'
        if not isinstance(function.get("arguments"), str | dict):
            return f'tool_calls[{index}]\'s "arguments" must be JSON text or an object'
    return None


class CallHoldback:
    """A reply's text as it streams, with what may be a tool call held back: the text before a call goes out as
    it comes; from the first call marker on, the rest waits for the reply's end (`finish`), when it is read as
    calls, or let out as text where it is not a well-formed call."""

    def __init__(self) -> None:
        self.pending = ""  # a tail that may be the start of a marker
        self.held = ""  # from the first marker on
        self.calling = False

    def push(self, piece: str) -> str:
        if self.calling:
            self.held += piece
            return ""
        text = self.pending + piece
        starts = [index for index in (text.find(marker) for marker in CALL_MARKERS) if index >= 0]
        if starts:
            self.calling, self.held, self.pending = True, text[min(starts) :], ""
            return text[: min(starts)]
        keep = max(
            (n for marker in CALL_MARKERS for n in range(1, len(marker)) if text.endswith(marker[:n])), default=0
        )
        self.pending = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(the text still to go out, the calls) once the reply has ended."""
        if not self.calling:
            return self.pending, []
        _, calls = parse_tool_calls(self.held)  # the text before the marker has gone out already
        return ("", calls) if calls else (self.held, [])
