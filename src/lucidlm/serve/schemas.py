"""What a request to `lucidlm serve` may say: the bodies of its routes, their ranges, and the server's limits.

Fields follow OpenAI's API, so its clients work unchanged; unknown fields are ignored, as OpenAI-compatible
servers do, and sampling settings a model of this kind does not have are refused by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from lucidlm.chat.tools import tool_calls_problem, tools_problem
from lucidlm.decode import SamplingConfig
from lucidlm.errors import LucidError
from lucidlm.model.config import shown_integer
from lucidlm.tokenizers import Tokenizer
from lucidlm.tokenizers.base import encode_prompt
from lucidlm.web.http import APIError


@dataclass
class ServerSettings:
    model_id: str = "lucidlm"
    max_tokens: int = 2048  # the most tokens one choice may ask for
    max_body_bytes: int = 1_000_000
    max_choices: int = 16  # prompts x n in one request
    allowed_origins: tuple[str, ...] = ()  # web pages (scheme://host:port) that may call the API from a browser


class SamplingFields(BaseModel):
    """The fields completions and chat share. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None  # not in OpenAI's API; vLLM and llama.cpp accept it too
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    response_format: dict[str, Any] | None = None


class CompletionBody(SamplingFields):
    prompt: str | list[str]
    logprobs: int | None = None  # 0..5 candidates per token, as in OpenAI's legacy completions
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """A message as OpenAI's clients send it: content as text, as a list of parts, or null (an assistant
    message that only called a tool)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[Any] | None = None  # an assistant message that called tools
    tool_call_id: str | None = None  # a tool's result: the call it answers
    name: str | None = None

    def template_message(self, index: int) -> dict:
        """The message as chat templates read it; bad tool calls are a 400 naming the message."""
        message: dict[str, Any] = {"role": self.role, "content": self.text(index)}
        if self.tool_calls is not None:
            problem = tool_calls_problem(self.tool_calls)
            if problem or self.role != "assistant":
                where = f"messages.{index}.tool_calls"
                raise APIError(400, problem or "only an assistant message has tool_calls", where)
            message["tool_calls"] = self.tool_calls
        if self.role == "tool":
            message["tool_call_id"] = self.tool_call_id or ""
            if self.name:
                message["name"] = self.name
        return message

    def text(self, index: int) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise APIError(
                    400,
                    f"messages[{index}] has a content part of type {part.type!r}; this model reads text only",
                    f"messages.{index}.content",
                )
        return "".join(part.text for part in self.content)


class ChatBody(SamplingFields):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None


def offered_tools(body: ChatBody) -> list[dict]:
    """The tools a chat request offers the model (none with tool_choice "none"); a 400 for what this server does
    not do: forcing a call (tool_choice "required" or a named function) and the deprecated `functions`."""
    for param in ("functions", "function_call"):
        if getattr(body, param):
            raise APIError(400, f"{param} is deprecated and not supported; send tools and tool_choice", param)
    if body.tool_choice not in (None, "auto", "none"):
        rule = 'tool_choice may be "auto" (the model decides) or "none"; forcing a call is not supported'
        raise APIError(400, rule, "tool_choice")
    if not body.tools or body.tool_choice == "none":
        return []
    problem = tools_problem(body.tools)
    if problem:
        raise APIError(400, problem, "tools")
    return body.tools


def check_sampling(body: SamplingFields, settings: ServerSettings, default_max_tokens: int) -> SamplingConfig:
    """Range checks (400, naming the field) and the SamplingConfig the engine runs with."""
    if body.max_tokens is None:
        body.max_tokens = min(default_max_tokens, settings.max_tokens)
    checks = [
        ("max_tokens", 1 <= body.max_tokens <= settings.max_tokens, f"must lie in 1..{settings.max_tokens}"),
        ("temperature", math.isfinite(body.temperature) and 0 <= body.temperature <= 2, "must lie in [0, 2]"),
        ("top_p", math.isfinite(body.top_p) and 0 < body.top_p <= 1, "must lie in (0, 1]"),
        ("top_k", body.top_k is None or body.top_k >= 1, "must be at least 1"),
        ("n", 1 <= body.n <= settings.max_choices, f"must lie in 1..{settings.max_choices}"),
        ("seed", body.seed is None or -(2**63) <= body.seed < 2**64, "must be a 64-bit integer"),
        ("response_format", body.response_format in (None, {"type": "text"}), "other than text is not supported"),
        ("presence_penalty", body.presence_penalty == 0, "is not supported by this server; leave it at 0"),
        ("frequency_penalty", body.frequency_penalty == 0, "is not supported by this server; leave it at 0"),
        ("logit_bias", not body.logit_bias, "is not supported by this server"),
    ]
    for param, ok, rule in checks:
        if not ok:
            value = getattr(body, param)
            shown = shown_integer(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
            raise APIError(400, f"{param} {rule} (got {shown})", param)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise APIError(400, "stop takes at most 4 strings", "stop")
    body.stop = stop
    return SamplingConfig(body.temperature, body.top_k, body.top_p)


def encode_text(tokenizer: Tokenizer, text: str, param: str) -> list[int]:
    """A request's text as token ids; symbols the vocabulary lacks are a 400 naming the field."""
    try:
        return encode_prompt(tokenizer, text)
    except LucidError as exc:
        raise APIError(400, str(exc), param) from None
