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

from lucidlm.errors import ConfigError
from lucidlm.generate import encode_prompt
from lucidlm.tokenizers import Tokenizer
from lucidlm.tokenizers.base import END_OF_TURN

# The turns of lucidlm's own template: one special token opens each role's message, END_OF_TURN ends every turn.
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
CHAT_TOKENS = (*ROLE_TOKENS.values(), END_OF_TURN)
# The same template in Jinja2, the form `transformers`' `apply_chat_template` runs (written into HF exports).
OWN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('a message role is system, user or assistant, not ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '" + END_OF_TURN + "' }}"
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
    template: str, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True, **special_tokens: str | None
) -> str:
    """The conversation as the template writes it (what `apply_chat_template(..., tokenize=False)` gives)."""
    try:
        return compiled(template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **special_tokens
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


def chat_prompt(tokenizer: Tokenizer, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[str]]:
    """(prompt ids, stop strings) for a reply to `messages`: through the model's template where it has one,
    else as plain "Role: text" lines ending in "Assistant:"."""
    template = chat_template(tokenizer)
    if template:
        special = {key: tokenizer.token_text(key) for key in ("bos_token", "eos_token")}
        return tokenizer.encode_with_specials(render_template(template, messages, **special)), []
    text = "".join(PLAIN_TURN.format(role=m["role"].title(), content=m["content"]) for m in messages)
    return encode_prompt(tokenizer, text + "Assistant:"), [PLAIN_STOP]
