"""Chat templates: a conversation written out as the text a model was trained to continue.

lucidlm's own tokenizers get lucidlm's template when a base model is fine-tuned for chat: a special token
opens each turn and one ends it (ROLE_TOKENS, END_OF_TURN). A Hub model ships its template as Jinja2
(tokenizer_config.json's `chat_template`, or chat_template.jinja). It is code from the internet, so it runs
in Jinja2's sandbox (no attribute of Python's internals reachable), the way `transformers` renders it: blocks
trimmed, `messages`, `add_generation_prompt`, the special tokens' texts (`bos_token`, `eos_token`),
`raise_exception` and a `tojson` that leaves HTML alone. The reply ends at the model's end-of-turn tokens,
which the generation stops at (its eos ids).

A model without a template (lucidlm's own base models) gets the conversation as plain lines,
"User: ...", "Assistant: ...", ending in "Assistant:", and the reply stops where the model starts a "User:" line.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lucidlm.chat.tools import CALL_TOKEN, TOOL_TOKEN, TOOL_TOKENS, template_messages, uses_tools
from lucidlm.errors import ConfigError
from lucidlm.generate import encode_prompt
from lucidlm.tokenizers import Tokenizer
from lucidlm.tokenizers.base import END_OF_TURN

# The turns of lucidlm's own template: one special token opens each role's message, END_OF_TURN ends every turn.
# A model that calls tools has two more (chat/tools.py): TOOL_TOKEN opens a tool's result, CALL_TOKEN a call.
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
CHAT_TOKENS = (*ROLE_TOKENS.values(), END_OF_TURN)
# The same template in Jinja2, the form `transformers`' `apply_chat_template` runs (written into HF exports).
# Offered tools are written into the system turn, one a line as a signature, `name(argument: type, ...):
# description`, which costs a small model far fewer tokens than their JSON Schema; a call is
# `<|call|>name({"argument": value})`.
OWN_CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|system|>' }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n' }}{% endif %}"
    "{% for tool in tools %}{% set f = tool['function'] if tool['function'] is defined else tool %}"
    "{% set p = f['parameters']['properties'] if f['parameters'] is defined "
    "and f['parameters']['properties'] is defined else {} %}"
    "{{ f['name'] + '(' }}{% for name, spec in p.items() %}{{ name + ': ' + (spec['type'] or 'any') }}"
    "{% if not loop.last %}{{ ', ' }}{% endif %}{% endfor %}{{ ')' }}"
    "{% if f['description'] %}{{ ': ' + f['description'] }}{% endif %}"
    "{% if not loop.last %}{{ '\\n' }}{% endif %}{% endfor %}{{ '" + END_OF_TURN + "' }}{% endif %}"
    "{% for message in messages %}"
    "{% if tools and loop.first and message['role'] == 'system' %}"
    "{% elif message['role'] == 'tool' %}{{ '" + TOOL_TOKEN + "' + message['content'] + '" + END_OF_TURN + "' }}"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "{{ '<|assistant|>' + (message['content'] or '') }}"
    "{% for call in message['tool_calls'] %}{% set f = call['function'] if call['function'] is defined else call %}"
    "{{ '" + CALL_TOKEN + "' + f['name'] + '(' }}"
    "{{ f['arguments'] if f['arguments'] is string else f['arguments'] | tojson }}{{ ')' }}{% endfor %}"
    "{{ '" + END_OF_TURN + "' }}"
    "{% elif message['role'] in ['system', 'user', 'assistant'] %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '" + END_OF_TURN + "' }}"
    "{% else %}"
    "{{ raise_exception('a message role is system, user, assistant or tool, not ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + ROLE_TOKENS["assistant"] + "' }}{% endif %}"
)
PLAIN_TURN = "{role}: {content}\n"
PLAIN_STOP = "\nUser:"


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kwargs: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kwargs)


@functools.lru_cache(maxsize=8)
def compiled(template: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise
    try:
        return environment.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"the model's chat template is not valid Jinja2 ({exc})") from None


def render_template(
    template: str,
    messages: Sequence[dict],
    add_generation_prompt: bool = True,
    tools: Sequence[dict] | None = None,
    **special_tokens: str | None,
) -> str:
    """The conversation as the template writes it (what `apply_chat_template(..., tools=tools, tokenize=False)`
    gives). A call's arguments reach the template as a dictionary, as `transformers` asks of its callers."""
    try:
        return compiled(template).render(
            messages=template_messages(messages),
            add_generation_prompt=add_generation_prompt,
            tools=list(tools) if tools else None,
            **special_tokens,
        )
    except jinja2.TemplateError as exc:  # a template's raise_exception, or a sandbox refusal
        raise ConfigError(f"the model's chat template refused the conversation ({exc})") from None


def chat_template(tokenizer: Tokenizer) -> str | None:
    """The Jinja2 template a model speaks: the one its tokenizer came with (a Hub model's); else lucidlm's own
    where the tokenizer holds its turn tokens (a model fine-tuned for chat, GPT-2 given them included); else None
    (a base model, which gets plain lines)."""
    if tokenizer.hub_chat_template:
        return tokenizer.hub_chat_template
    return OWN_CHAT_TEMPLATE if all(token in tokenizer.special_tokens for token in CHAT_TOKENS) else None


def missing_tool_tokens(tokenizer: Tokenizer) -> list[str]:
    """The tool tokens lucidlm's own template needs and the tokenizer lacks (none for a Hub template, which writes
    tools its own way)."""
    if tokenizer.hub_chat_template:
        return []
    return [token for token in TOOL_TOKENS if token not in tokenizer.special_tokens]


def check_tool_tokens(tokenizer: Tokenizer, messages: Sequence[dict], tools: Sequence[dict] | None) -> None:
    """A conversation with tools through lucidlm's own template needs the tool tokens, which a model gets by
    fine-tuning on conversations that call tools."""
    if uses_tools(messages, tools):
        missing = missing_tool_tokens(tokenizer)
        if missing:
            raise ConfigError(
                f"this model has no {' or '.join(missing)} token: it was not fine-tuned to call tools; fine-tune it "
                "on conversations with tool calls (data prepare --chat), or leave the tools out"
            )


def chat_prompt(
    tokenizer: Tokenizer, messages: Sequence[dict], tools: Sequence[dict] | None = None
) -> tuple[list[int], list[str]]:
    """(prompt ids, stop strings) for a reply to `messages` (offering `tools`): through the model's template where
    it has one, else as plain "Role: text" lines ending in "Assistant:" (a base model is offered no tools; the
    results of earlier calls are "Tool: ..." lines)."""
    template = chat_template(tokenizer)
    if template:
        check_tool_tokens(tokenizer, messages, tools)
        special = {key: tokenizer.token_text(key) for key in ("bos_token", "eos_token")}
        return tokenizer.encode_with_specials(render_template(template, messages, tools=tools, **special)), []
    if tools:
        raise ConfigError("this model has no chat template, so it cannot call tools; leave the tools out")
    text = "".join(PLAIN_TURN.format(role=m["role"].title(), content=m["content"]) for m in messages)
    return encode_prompt(tokenizer, text + "Assistant:"), [PLAIN_STOP]
