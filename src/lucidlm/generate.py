"""Sampling text from a trained GPT: greedy, temperature, top-k, top-p, stop strings and streaming.

Decoding uses the KV cache: the prompt runs through the model once (prefill), then each new token is one
forward step over a single position. When the context window fills up, the cache keeps the most recent half
of the window and is refilled from those tokens (as llama.cpp's context shift does), so long generations
stay fast while every token still sees at least half a window of context.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from lucidlm.device import autocast, missing_compiler, use_compile_cache
from lucidlm.errors import ConfigError, TokenizerError
from lucidlm.model import GPT
from lucidlm.tokenizers import Tokenizer


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 0 means greedy: always the most likely token
    top_k: int | None = None  # keep only the k most likely tokens
    top_p: float | None = None  # keep the smallest set of tokens whose probabilities add up to p

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature {self.temperature} must be 0 (greedy) or a positive number")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top-k {self.top_k} must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top-p {self.top_p} must lie in (0, 1]")


def seed_generator(generator: torch.Generator, seed: int) -> torch.Generator:
    """Seed with any integer: PyTorch takes 64 bits, so the seed is taken modulo 2**64 (as OpenAI's API and
    vLLM accept any 64-bit seed, signed or not)."""
    generator.manual_seed(seed % 2**64)
    return generator


def filter_logits(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Scale by temperature and set the logits that top-k / top-p exclude to -inf. logits: (B, V).

    The largest logit is subtracted before dividing, so that a tiny temperature gives 0 for the most likely
    token and -inf for the rest (greedy in the limit) instead of overflowing into inf - inf = nan."""
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / config.temperature
    if config.top_k is not None and config.top_k < logits.size(-1):
        kth = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p is not None and config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach p; the most likely token always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= config.top_p
        drop_sorted[:, 0] = False  # even when top_p rounds to 0 in float32
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token id per row of `logits` (B, V). Returns (B,).

    Sampling inverts the cumulative distribution: draw u uniformly from [0, 1) and take the first token whose
    cumulative probability exceeds u. Each row uses exactly one random number, so a row's draw depends on its
    own random stream only; the server passes `uniforms` (B,), one from each request's own generator.
    """
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    probabilities = filter_logits(logits.float(), config).softmax(dim=-1)
    if uniforms is None:
        uniforms = torch.rand(logits.shape[0], generator=generator, device=logits.device)
    cumulative = probabilities.cumsum(dim=-1)  # (B, V)
    # u is scaled by the row's total, so rounding in the sum cannot leave u beyond the last token
    token = torch.searchsorted(cumulative, (uniforms * cumulative[:, -1])[:, None], right=True)
    return token.squeeze(-1).clamp(max=logits.shape[-1] - 1)


def prompt_window(prompt: list[int], block_size: int) -> list[int]:
    """The part of a prompt that decoding starts from: a prompt longer than the window keeps its end."""
    return prompt[-block_size:]


def shifted_context(context: list[int], block_size: int) -> list[int]:
    """What a sequence keeps when its window of `block_size` tokens is full: the newer half (llama.cpp's
    context shift). The cache is refilled from it, so every later token still sees half a window or more."""
    return context[-(block_size // 2) :]


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
    """Yield new token ids one at a time, decoding with the KV cache.

    With `compiled` (from `compile_decoding(model)`), each one-token step runs through it over a StaticKVCache;
    the prompt, of any length, still runs through the model itself (a compiled graph has fixed shapes)."""
    block_size = model.config.block_size
    device = model.lm_head.weight.device
    context = prompt_window(prompt, block_size)
    cache = model.new_cache(batch_size=1, static=compiled is not None)
    step = model if compiled is None else compiled
    with autocast(device):
        logits, _ = model(torch.tensor([context], device=device), cache=cache)
    length = len(context)  # positions in the cache
    for _ in range(max_new_tokens):
        token = int(sample_next(logits[:, -1], config, generator)[0])
        yield token
        with autocast(device):
            if length == block_size:  # the window is full: keep its newer half and refill the cache
                context = [*shifted_context(context, block_size), token]
                cache.reset()
                logits, _ = model(torch.tensor([context], device=device), cache=cache)
                length = len(context)
            else:
                context.append(token)
                logits, _ = step(torch.tensor([[token]], device=device), cache=cache)
                length += 1


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
    """`count` replies to one prompt, decoded together: the prompt is read once into every row of a KV cache, then
    each step is one forward pass over all rows (RL's group of samples). A reply ends with its end token, which it
    keeps, or after `max_new_tokens`; the prompt and the reply but its last token must fit in the model's window."""
    if len(prompt) + max_new_tokens - 1 > model.config.block_size:
        raise ConfigError(
            f"a prompt of {len(prompt)} tokens leaves no room for {max_new_tokens} more in the window of "
            f"{model.config.block_size}"
        )
    device = model.lm_head.weight.device
    cache = model.new_cache(batch_size=count)
    with autocast(device):
        logits, _ = model(torch.tensor([prompt] * count, device=device), cache=cache)
    replies: list[list[int]] = [[] for _ in range(count)]
    ended = [False] * count
    ends = set(end_ids)
    for step in range(max_new_tokens):
        tokens = sample_next(logits[:, -1], config, generator)  # (count,)
        for row, token in enumerate(tokens.tolist()):
            if not ended[row]:
                replies[row].append(token)
                ended[row] = token in ends
        if all(ended) or step == max_new_tokens - 1:  # the last token is kept, never read
            break
        with autocast(device):
            logits, _ = model(tokens[:, None], cache=cache)
    return replies


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """Token ids for `prompt`. Symbols the vocabulary lacks are an error that lists them, except for a
    vocabulary with an unknown token (the word tokenizer's <unk>), which reads them as that token."""
    unknown = tokenizer.unknown_symbols(prompt)
    if unknown and tokenizer.unknown_token is None:
        shown = " ".join(repr(s) for s in unknown[:20])
        raise TokenizerError(
            f"the prompt contains {len(unknown)} symbol(s) the model's vocabulary lacks: {shown}; "
            "remove or replace them"
        )
    if not prompt:
        # An empty prompt starts from a newline, the most neutral start a text has, when the vocabulary has one.
        return tokenizer.prompt_ids("\n") if not tokenizer.unknown_symbols("\n") else [0]
    return tokenizer.prompt_ids(prompt)


class StopStreamer:
    """Turns token ids into text pieces as they come, holding back text that might begin a stop string.

    Each token is decoded once: the text is the concatenation of the decoded tokens, except that tokens
    that end inside a multi-byte character wait (in `unfinished`) until the character is whole."""

    def __init__(self, tokenizer: Tokenizer, stop: list[str] | None = None):
        self.tokenizer, self.stop = tokenizer, [s for s in (stop or []) if s]
        self.text = ""  # the decoded text so far
        self.unfinished: list[int] = []  # ids whose bytes do not yet make whole characters
        self.emitted = 0  # characters of `text` already handed out
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one token; return the text that is now safe to show ('' if none)."""
        self.unfinished.append(token)
        piece = self.tokenizer.decode(self.unfinished)
        if piece.endswith("\ufffd"):  # an unfinished multi-byte character: wait for its other bytes
            return ""
        self.text, self.unfinished = self.text + piece, []
        text = self.text
        # Held-back text never ends in a stop string's beginning, so a stop string starts after `emitted`.
        hits = [i for i in (text.find(s, self.emitted) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return self._emit(text, min(hits))
        end = len(text)
        for s in self.stop:  # hold back the longest tail that could grow into a stop string
            for length in range(min(len(s) - 1, end - self.emitted), 0, -1):
                if s.startswith(text[end - length : end]):
                    end -= length
                    break
        return self._emit(text, end)

    def finish(self) -> str:
        """What was held back, once no more tokens will come."""
        if self.stopped:
            return ""
        return self._emit(self.text + self.tokenizer.decode(self.unfinished), None)

    def _emit(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else end
        piece = text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece


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
    streamer, ends = StopStreamer(tokenizer, stop), set(tokenizer.eos_ids)
    ids = encode_prompt(tokenizer, prompt) if isinstance(prompt, str) else prompt
    for token in generate_ids(model, ids, max_new_tokens, config or SamplingConfig(), generator, compiled):
        if generated is not None:
            generated.append(token)
        if token in ends:
            break
        piece = streamer.push(token)
        if piece:
            yield piece
        if streamer.stopped:
            return
    tail = streamer.finish()
    if tail:
        yield tail
