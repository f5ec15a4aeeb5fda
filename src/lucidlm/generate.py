"""Sampling text from a trained GPT: token ids or streamed text, one sequence or a group of replies to one
prompt (GRPO's), all through the one decoding step of decode.py (greedy, temperature, top-k, top-p, stop strings,
the KV cache and its context shift).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from lucidlm.decode import Decoder, Row, SamplingConfig, StopStreamer
from lucidlm.device import missing_compiler, use_compile_cache
from lucidlm.errors import ConfigError
from lucidlm.model import GPT
from lucidlm.tokenizers import Tokenizer
from lucidlm.tokenizers.base import encode_prompt


def compile_decoding(model: GPT) -> Callable:
    """The model compiled (torch.compile) for one-token steps over a StaticKVCache, for `generate_ids`.

    At batch 1 a baby-sized model's step is mostly Python: about 60 small operations through a dozen modules
    per layer, each a few microseconds of dispatch around a tiny matrix-vector product. Compiled, the step is
    one call; Inductor's C++ wrapper (`cpp_wrapper`) also drops its own Python per kernel. The first step
    compiles (tens of seconds on a laptop's CPU; Inductor keeps the result on disk for later runs).
    """
    missing = missing_compiler(model.lm_head.weight.device)
    if missing is not None:
        raise ConfigError(f"{missing}; install it or leave out --compile")
    use_compile_cache()
    return torch.compile(model, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})


@torch.inference_mode()
def generate_ids(
    model: GPT,
    prompt: list[int],
    max_new_tokens: int,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
    compiled: Callable | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time. With `compiled` (from `compile_decoding(model)`), each one-token
    step runs through it over a StaticKVCache."""
    decoder = Decoder(model, 1, compiled)
    row = Row(config, max_new_tokens, generator)
    decoder.add(row, prompt)
    while row.finish_reason is None and max_new_tokens > 0:
        decoder.step()
        yield row.generated[-1]


@torch.inference_mode()
def sample_group(
    model: GPT,
    prompt: list[int],
    count: int,
    max_new_tokens: int,
    config: SamplingConfig,
    generator: torch.Generator | None,
    end_ids: list[int],
) -> list[list[int]]:
    """`count` replies to one prompt, decoded together (RL's group of samples): the prompt is read once into
    every row, and each step is one forward pass over all rows. A reply ends with its end token, which it
    keeps, or after `max_new_tokens`; the prompt and the reply but its last token must fit in the window."""
    if len(prompt) + max_new_tokens - 1 > model.config.block_size:
        raise ConfigError(
            f"a prompt of {len(prompt)} tokens leaves no room for {max_new_tokens} more in the window of "
            f"{model.config.block_size}"
        )
    decoder = Decoder(model, count)
    rows = [Row(config, max_new_tokens, generator, frozenset(end_ids)) for _ in range(count)]
    decoder.add_copies(rows, prompt)
    while any(row.finish_reason is None for row in rows):
        decoder.step()
    return [row.generated for row in rows]


@torch.inference_mode()
def generate_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str | list[int],
    max_new_tokens: int = 200,
    config: SamplingConfig | None = None,
    stop: list[str] | None = None,
    generator: torch.Generator | None = None,
    compiled: Callable | None = None,
    generated: list[int] | None = None,
) -> Iterator[str]:
    """Stream the continuation of `prompt` (a text, or its token ids: a chat prompt) as text pieces; it ends
    early at a stop string (not included) or at one of the tokenizer's end-of-text tokens (a chat model's end
    of turn). `compiled`: see generate_ids. `generated`, when given, receives every token id sampled."""
    ids = encode_prompt(tokenizer, prompt) if isinstance(prompt, str) else prompt
    decoder = Decoder(model, 1, compiled)
    row = Row(config or SamplingConfig(), max_new_tokens, generator, frozenset(tokenizer.eos_ids))
    row.streamer = StopStreamer(tokenizer, stop)
    if generated is not None:
        row.generated = generated
    decoder.add(row, ids)
    while row.finish_reason is None and max_new_tokens > 0:
        decoder.step()
        if row.text:
            yield row.text
