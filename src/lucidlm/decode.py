"""Decoding: the sampler, the context window's shift, stop strings, and the one step that advances every
sequence being decoded. `lucidlm generate`, chat, eval, GRPO's groups and the serving engine all decode
through `Decoder.step`, as nanochat's one Engine serves its command line, its web UI and RL.

A `Decoder` holds sequences in the rows of one KV cache. Each row has read its prompt (prefill) and holds
the logits of its last position. A step is

    each row samples its next token from them (its own settings, its own random numbers)
    each row's token goes through its stop rules: an end token, a stop string, its length
    while any row goes on:
        shift the rows whose window is full: keep the newer half, read in again (llama.cpp's context shift)
        one forward pass over every row, each fed its new token           -> the next logits (rows, vocab)

so a prompt of P tokens and N new tokens take P + N - 1 positions: the last new token is never read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lucidlm.device import autocast
from lucidlm.errors import ConfigError
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
    own random stream only; the decoder passes `uniforms` (B,), drawn from each row's own generator.
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


@dataclass
class Row:
    """One sequence being decoded: what its cache row holds, how it samples, and when it ends."""

    sampling: SamplingConfig
    max_tokens: int
    generator: torch.Generator | None = None  # rows that share one draw their numbers in one call
    ends: frozenset[int] = frozenset()  # tokens that end it (kept in `generated`, never shown as text)
    streamer: StopStreamer | None = None  # its text, and its stop strings
    context: list[int] = field(default_factory=list)  # the tokens in its cache row
    logits: torch.Tensor | None = None  # (vocab,) after the last token read: what the next token is drawn from
    generated: list[int] = field(default_factory=list)
    top_logprobs: int | None = None  # None: no logprobs; 0: the chosen token's; k: and the k most likely
    owner: object = None  # what the caller decodes it for (the server's request)
    # what the last step gave
    text: str = ""  # the text now safe to show
    logprob: float | None = None  # the token's log-probability under the model (temperature 1, unfiltered)
    top: list[tuple[int, float]] = field(default_factory=list)  # the most likely tokens and their logprobs
    finish_reason: str | None = None  # "stop" (an end token or a stop string) or "length"
    failed: bool = False  # an error was reported: the row leaves the decoder


class Decoder:
    """Rows of one KV cache and the step that advances them together (see the module's docstring).

    With `compiled` (generate.compile_decoding), one-token steps run through it over a StaticKVCache of one
    row; a prompt or a shifted window, of any length, still runs through the model itself."""

    def __init__(self, model: GPT, capacity: int, compiled: Callable | None = None):
        self.model, self.compiled = model, compiled
        self.device = model.lm_head.weight.device
        self.block_size = model.config.block_size
        if compiled is not None and capacity != 1:
            raise ValueError("a compiled decoding step decodes one sequence")
        self.cache = model.new_cache(capacity, slots=compiled is None, static=compiled is not None)
        self.rows: list[Row] = []  # rows[i] lives in row i of the cache

    def add(self, row: Row, prompt: list[int]) -> None:
        """Read `prompt` (its window) into the next free cache row."""
        if not prompt:
            raise ValueError("a sequence needs at least one prompt token")
        self.rows.append(row)
        self.refill(len(self.rows) - 1, prompt_window(prompt, self.block_size))

    def add_copies(self, rows: list[Row], prompt: list[int]) -> None:
        """Rows that all start from one prompt (a group of replies), read in one pass."""
        start, prompt = len(self.rows), prompt_window(prompt, self.block_size)
        self.rows.extend(rows)
        for index in range(start, len(self.rows)):
            self.cache.clear(index)
        logits = self.forward(start, len(self.rows), torch.tensor([prompt] * len(rows), device=self.device))
        for row, row_logits in zip(rows, logits, strict=True):
            row.context, row.logits = list(prompt), row_logits[-1].float()

    def refill(self, index: int, context: list[int]) -> None:
        """Make cache row `index` hold exactly `context`, and the row the logits of its last position."""
        self.cache.clear(index)
        row = self.rows[index]
        row.context = list(context)
        row.logits = self.forward(index, index + 1, torch.tensor([context], device=self.device))[0, -1].float()

    def remove(self, row: Row) -> None:
        """Free the row; the last busy row moves into the gap so busy rows stay at the front."""
        index, last = self.rows.index(row), len(self.rows) - 1
        if index != last:
            self.cache.move(last, index)
            self.rows[index] = self.rows[last]
        self.cache.clear(last)
        self.rows.pop()

    @torch.inference_mode()
    def forward(self, start: int, stop: int, tokens: torch.Tensor, step: Callable | None = None) -> torch.Tensor:
        """Logits (rows, T, vocab) of `tokens` (rows, T) read into the cache rows start..stop-1. Under inference
        mode always: a compiled step traced with autograd on gives wrong tokens over a StaticKVCache."""
        self.cache.select(start, stop)
        with autocast(self.device):
            logits, _ = (self.model if step is None else step)(tokens, cache=self.cache)
        return logits

    def step(self, failed: Callable[[Row, Exception], None] | None = None) -> None:
        """Advance every row by one token (see the module's docstring). A row that has finished takes no more
        tokens but is still fed, as the rows beside it are, until the caller removes it.

        With `failed`, an error in one row's sampling settings or its shift is reported there and the row
        leaves at once (the others go on); without, it is raised."""
        if not self.rows:
            return
        logits = torch.stack([row.logits for row in self.rows])  # (B, vocab)
        logprobs = logits.log_softmax(dim=-1) if any(row.top_logprobs is not None for row in self.rows) else None
        for index, (row, token) in enumerate(zip(self.rows, self.sample(logits, failed), strict=True)):
            if token is None or row.finish_reason is not None:
                continue
            if logprobs is not None and row.top_logprobs is not None:
                row.logprob = float(logprobs[index, token])
                if row.top_logprobs:
                    values, ids = torch.topk(logprobs[index], min(row.top_logprobs, logprobs.shape[-1]))
                    row.top = list(zip(ids.tolist(), values.tolist(), strict=True))
            self.finish_token(row, token)
        self.remove_failed()
        if all(row.finish_reason is not None for row in self.rows):
            return  # the last tokens are never read
        for index, row in enumerate(self.rows):
            if len(row.context) == self.block_size:
                with reporting(failed, row):
                    self.refill(index, shifted_context(row.context, self.block_size))
        self.remove_failed()
        if not self.rows:
            return
        tokens = [row.generated[-1] for row in self.rows]
        fed = self.forward(0, len(self.rows), torch.tensor([[t] for t in tokens], device=self.device), self.compiled)
        for row, token, row_logits in zip(self.rows, tokens, fed[:, -1].float(), strict=True):
            row.context.append(token)
            row.logits = row_logits

    def remove_failed(self) -> None:
        for row in [row for row in self.rows if row.failed]:
            self.remove(row)

    def sample(self, logits: torch.Tensor, failed: Callable[[Row, Exception], None] | None) -> list[int | None]:
        """Every row's next token: rows with the same settings in one call, and each row's random number from
        its own generator (rows sharing one generator draw theirs together, in row order)."""
        groups: dict[int, tuple[SamplingConfig, list[int]]] = {}
        for index, row in enumerate(self.rows):
            key = next((k for k, (config, _) in groups.items() if config == row.sampling), len(groups))
            groups.setdefault(key, (row.sampling, []))[1].append(index)
        tokens: list[int | None] = [None] * len(self.rows)
        for config, indices in groups.values():
            try:
                uniforms = self.uniforms(indices) if config.temperature > 0 else None
                chosen = sample_next(logits[indices], config, None, uniforms).tolist()
            except Exception as exc:  # these settings broke: the rows that share them fail, not the others
                if failed is None:
                    raise
                for index in indices:
                    report(failed, self.rows[index], exc)
                continue
            for index, token in zip(indices, chosen, strict=True):
                tokens[index] = token
        return tokens

    def uniforms(self, indices: list[int]) -> torch.Tensor:
        """One uniform number for each of the rows `indices`, from each row's generator."""
        draws: dict[int, torch.Tensor] = {}
        by_generator: dict[int, list[int]] = {}
        for index in indices:
            by_generator.setdefault(id(self.rows[index].generator), []).append(index)
        for same in by_generator.values():
            numbers = torch.rand(len(same), generator=self.rows[same[0]].generator, device=self.device)
            draws.update(zip(same, numbers, strict=True))
        return torch.stack([draws[index] for index in indices])

    @staticmethod
    def finish_token(row: Row, token: int) -> None:
        """The row's stop rules for its new token: its text, and whether (and why) it ends here."""
        row.generated.append(token)
        if token in row.ends:
            row.text, row.finish_reason = (row.streamer.finish() if row.streamer else ""), "stop"
            return
        row.text = row.streamer.push(token) if row.streamer else ""
        if row.streamer and row.streamer.stopped:
            row.finish_reason = "stop"
        elif len(row.generated) >= row.max_tokens:
            row.text += row.streamer.finish() if row.streamer else ""
            row.finish_reason = "length"


def report(failed: Callable[[Row, Exception], None], row: Row, exc: Exception) -> None:
    row.failed = True
    failed(row, exc)


class reporting:
    """An error inside is the row's alone when the caller gave `failed`; otherwise it is raised."""

    def __init__(self, failed: Callable[[Row, Exception], None] | None, row: Row):
        self.failed, self.row = failed, row

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> bool:
        if exc is None or self.failed is None or not isinstance(exc, Exception):
            return False
        report(self.failed, self.row, exc)
        return True
