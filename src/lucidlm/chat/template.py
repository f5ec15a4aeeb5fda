"""Chat templates: a conversation written out as the text a model was trained to continue.

lucidlm's own tokenizers get lucidlm's template when a base model is fine-tuned for chat: a special token
opens each turn and one ends it (ROLE_TOKENS, END_OF_TURN). A Hub model ships its template as Jinja2
(tokenizer_config.json's `chat_template`, or chat_template.jinja). It is code from the internet, so it runs
in Jinja2's sandbox (no attribute of Python's internals reachable), the way `transformers` renders it: blocks
trimmed, `messages`, `add_generation_prompt`, the special tokens' texts (`bos_token`, `eos_token`),
`raise_exception` and a `tojson` that leaves HTML alone. The reply ends at the model's end-of-turn tokens,
which the generation stops at (its eos ids).

Only the template writes special tokens. A message, a tool's result or definition that spells one (`<|end|>
<|system|>...`) is read as that text, never as the token, so no one can forge a turn from inside a message (the
convention of Hugging Face's `split_special_tokens` and tiktoken's `disallowed_special`): while the template
renders, each such text stands behind one character of Unicode's private use planes that the conversation does
not hold (`SpecialTextGuard`), and that character is encoded as the text it hides.

A model without a template (lucidlm's own base models) gets the conversation as plain lines,
"User: ...", "Assistant: ...", ending in "Assistant:", and the reply stops where the model starts a "User:" line.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lucidlm.chat.tools import CALL_TOKEN, TOOL_TOKEN, TOOL_TOKENS, template_messages, uses_tools
from lucidlm.errors import ConfigError
from lucidlm.tokenizers import Tokenizer
from lucidlm.tokenizers.base import END_OF_TURN, encode_prompt

# The turns of lucidlm's own template: one special token opens each role's message, END_OF_TURN ends every turn.
# A model that calls tools has two more (chat/tools.py): TOOL_TOKEN opens a tool's result, CALL_TOKEN a call.
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
CHAT_TOKENS = (*ROLE_TOKENS.values(), END_OF_TURN)
NAMED_TOKENS = ("bos_token", "eos_token")  # the special tokens a Hub template may write by name
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
    "{{ f['name'] + '(' }}{% for name, spec in p.items() %}{{ name + ': ' + (spec['type'] if spec['type'] is string "
    "else (spec['type'] | join(' or ') if spec['type'] else 'any')) }}"
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
# A reply in lucidlm's template ends at its end of turn, or where the model opens another turn instead: the text
# of such a token is never part of a reply (read back as a message, it would be text, not the turn it opened).
TURN_OPENERS = (*ROLE_TOKENS.values(), TOOL_TOKEN)
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
    except Exception as exc:  # a Hub template is code from outside: what it cannot write fails this conversation
        raise ConfigError(
            f"the model's chat template failed on the conversation ({type(exc).__name__}: {exc})"
        ) from None


PRIVATE_USE = range(0xF0000, 0x10FFFE)  # Unicode's supplementary private use areas A and B, less two noncharacters


class SpecialTextGuard:
    """The special tokens' texts that a conversation's own strings spell, hidden from the template behind
    characters the conversation does not hold, and encoded as text once it has rendered."""

    def __init__(self, tokenizer: Tokenizer, *values: object):
        texts = list(strings_in(values))
        spelled = [
            token for token in sorted(tokenizer.special_tokens, key=len, reverse=True) if any(token in t for t in texts)
        ]
        held = {character for text in texts for character in text} if spelled else set()
        free = (chr(code) for code in PRIVATE_USE if chr(code) not in held)
        self.tokenizer = tokenizer
        self.stand_in = {token: next(free) for token in spelled}
        self.hidden = {character: token for token, character in self.stand_in.items()}
        self.spelled = re.compile("|".join(map(re.escape, spelled))) if spelled else None
        self.stand_ins = re.compile(f"([{''.join(self.hidden)}])") if spelled else None

    def hide(self, value: Any) -> Any:
        """`value` (a message, the tools, any JSON value) with each special token's text in its strings, the
        keys of its objects included, replaced by that token's stand-in."""
        if self.spelled is None:
            return value
        if isinstance(value, str):
            return self.spelled.sub(lambda match: self.stand_in[match.group()], value)
        if isinstance(value, dict):
            return {self.hide(key): self.hide(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.hide(item) for item in value]
        return value

    def encode(self, rendered: str) -> list[int]:
        """The ids of what the template rendered: its special tokens as tokens, each stand-in as its text."""
        if self.stand_ins is None:
            return self.tokenizer.encode_with_specials(rendered)
        ids: list[int] = []
        for piece in self.stand_ins.split(rendered):
            if piece in self.hidden:
                ids.extend(self.tokenizer.encode_ordinary(self.hidden[piece]))
            elif piece:
                ids.extend(self.tokenizer.encode_with_specials(piece))
        return ids


def strings_in(value: object) -> Iterator[str]:
    """Every string in a JSON value, the keys of its objects included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def hub_template(tokenizer: Tokenizer) -> str | None:
    """The chat template a Hub tokenizer's files carried, if any (lucidlm's own tokenizers carry none)."""
    return getattr(tokenizer, "hub_chat_template", None)  # HFTokenizer's; read so, the page's Python needs no Rust


def template_tokens(tokenizer: Tokenizer) -> dict[str, str | None]:
    """The texts a Hub template writes by name (`bos_token`, `eos_token`), from the tokenizer's files."""
    token_text = getattr(tokenizer, "token_text", None)  # HFTokenizer's
    return {key: token_text(key) if token_text else None for key in NAMED_TOKENS}


def chat_template(tokenizer: Tokenizer) -> str | None:
    """The Jinja2 template a model speaks: the one its tokenizer came with (a Hub model's); else lucidlm's own
    where the tokenizer holds its turn tokens (a model fine-tuned for chat, GPT-2 given them included); else None
    (a base model, which gets plain lines)."""
    if hub_template(tokenizer):
        return hub_template(tokenizer)
    return OWN_CHAT_TEMPLATE if all(token in tokenizer.special_tokens for token in CHAT_TOKENS) else None


def missing_tool_tokens(tokenizer: Tokenizer) -> list[str]:
    """The tool tokens lucidlm's own template needs and the tokenizer lacks (none for a Hub template, which writes
    tools its own way)."""
    if hub_template(tokenizer):
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
    it has one (lucidlm's own stops where another turn opens), else as plain "Role: text" lines ending in
    "Assistant:" (a base model is offered no tools; the results of earlier calls are "Tool: ..." lines)."""
    template = chat_template(tokenizer)
    if template:
        check_tool_tokens(tokenizer, messages, tools)
        guard = SpecialTextGuard(tokenizer, messages, tools)
        hidden = guard.hide(messages)
        ids = guard.encode(render_template(template, hidden, tools=guard.hide(tools), **template_tokens(tokenizer)))
        openers = [token for token in TURN_OPENERS if token in tokenizer.special_tokens]
        return ids, openers if template == OWN_CHAT_TEMPLATE else []
    if tools:
        raise ConfigError("this model has no chat template, so it cannot call tools; leave the tools out")
    text = "".join(PLAIN_TURN.format(role=m["role"].title(), content=m["content"]) for m in messages)
    return encode_prompt(tokenizer, text + "Assistant:"), [PLAIN_STOP]
