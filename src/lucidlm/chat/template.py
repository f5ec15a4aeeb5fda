"""Chat templates: a conversation written out as the text a model was trained to continue.

lucidlm's own tokenizers get lucidlm's template when a base model is fine-tuned for chat (tokenizers/base.py:
a special token opens each turn and one ends it). A Hub model ships its template as Jinja2
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


def chat_prompt(tokenizer: Tokenizer, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[str]]:
    """(prompt ids, stop strings) for a reply to `messages`: through the model's template where it has one,
    else as plain "Role: text" lines ending in "Assistant:"."""
    template = tokenizer.chat_template
    if template:
        special = {key: tokenizer.token_text(key) for key in ("bos_token", "eos_token")}
        return tokenizer.encode_with_specials(render_template(template, messages, **special)), []
    text = "".join(PLAIN_TURN.format(role=m["role"].title(), content=m["content"]) for m in messages)
    return encode_prompt(tokenizer, text + "Assistant:"), [PLAIN_STOP]
