"""The decoding engine behind `lucidlm serve`: every busy request advances by one token per batched step.

Decoding one token costs about as much for 8 sequences as for 1 on a small model (the time goes to reading
the weights and to Python, not to arithmetic), so the engine keeps all requests in one `SlotKVCache` and
runs them through the model together. Requests join and leave between steps:

    step:  admit waiting requests (each reads its prompt into a free row of the cache: "prefill")
           shift the context of rows whose window is full (generate.shifted_context: keep the newer half)
           one forward pass over every busy row, each fed the token it sampled last  -> logits (B, vocab)
           each request samples its next token with its own random generator, and reports it
           requests that are finished (stop string, end-of-text, max_tokens) or cancelled leave

A request's random generator is its own and its row's numbers do not depend on the other rows, so with a
seed a request gives the same text alone or among others.

One request's failure is its own: an exception while admitting, sampling or reporting a request ends that
request with an error event (finish_reason "error") and the engine goes on with the others. Only an
exception in the batched forward pass fails every request in that batch, and the engine still goes on.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from lucidlm.device import autocast
from lucidlm.generate import (
    SamplingConfig,
    StopStreamer,
    prompt_window,
    sample_next,
    seed_generator,
    shifted_context,
)
from lucidlm.model import GPT
from lucidlm.tokenizers import Tokenizer


class QueueFull(Exception):
    """Every row is busy and the waiting line is full."""


@dataclass
class TokenEvent:
    """What a request learns after each step; the last event of a request carries its finish_reason."""

    text: str  # new text that is safe to show (held back while it might begin a stop string)
    token: int | None = None
    logprob: float | None = None  # log-probability of `token` under the model (temperature 1, unfiltered)
    top: list[tuple[int, float]] = field(default_factory=list)  # the most likely tokens and their logprobs
    finish_reason: str | None = None  # "stop" or "length" on the last event; "error" if decoding broke off
    error: str | None = None  # what broke off, with finish_reason "error"
    engine_ended: bool = False  # with an error: the engine itself is gone, not just this request


@dataclass
class Request:
    """One sequence to generate (an OpenAI `choice`). `on_event` is called from the engine's thread."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingConfig
    on_event: Callable[[TokenEvent], None]
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_logprobs: int | None = None  # None: no logprobs; 0: the chosen token's; k: and the k most likely
    cancelled: bool = False
    failed: bool = False  # decoding it raised; it has had its error event and leaves at once
    # filled in by the engine
    generated: list[int] = field(default_factory=list)
    context: list[int] = field(default_factory=list)  # the tokens in this request's cache row
    pending: int = 0  # the token to feed at the next step
    generator: torch.Generator | None = None
    streamer: StopStreamer | None = None
    engine_id: int = -1  # EngineProcess's number for it in messages to its process


class Engine:
    def __init__(self, model: GPT, tokenizer: Tokenizer, max_batch: int = 16, max_waiting: int = 64):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_batch, self.max_waiting = max_batch, max_waiting
        self.device = model.lm_head.weight.device
        self.cache = model.new_cache(max_batch, slots=True)
        self.active: list[Request] = []  # active[i] lives in row i of the cache
        self.waiting: deque[Request] = deque()
        self.end_of_text = set(tokenizer.eos_ids)
        self.steps = 0
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False

    # --- the public side: submit, cancel, start, stop -------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue a request; raises QueueFull when there is no room even in the waiting line."""
        if not request.prompt:
            raise ValueError("a request needs at least one prompt token")
        with self._wakeup:
            free_rows = self.max_batch - len(self.active)
            if len(self.waiting) >= free_rows + self.max_waiting:
                raise QueueFull(f"{len(self.active)} requests running and {len(self.waiting)} waiting")
            self.waiting.append(request)
            self._wakeup.notify()

    def cancel(self, request: Request) -> None:
        """The request leaves at the next step (its row is freed) and gets no more events."""
        request.cancelled = True

    def load(self) -> tuple[int, int]:
        """(running, waiting) request counts."""
        return len(self.active), len(self.waiting)

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._serve_forever, name="lucidlm-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wakeup:
            self._running = False
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join()

    def run_until_idle(self) -> None:
        """Step until every submitted request has finished (for scripts and tests; no thread needed)."""
        while self.active or self.waiting:
            self.step()

    def _serve_forever(self) -> None:
        while True:
            with self._wakeup:
                while self._running and not (self.active or self.waiting):
                    self._wakeup.wait()
                if not self._running:
                    return
            self.step()

    # --- one step -----------------------------------------------------------------------------------------

    def step(self) -> None:
        """One decoding step. Whatever goes wrong in it fails the requests it concerns, never the engine."""
        try:
            self._step()
        except Exception as exc:  # a failure outside any one request's part: the running requests end
            for request in self.active:
                self._fail(request, exc)
        self._drop_failed()

    @torch.inference_mode()
    def _step(self) -> None:
        self.steps += 1
        self._drop_cancelled()
        self._admit()
        block_size = self.model.config.block_size
        for row, request in enumerate(self.active):
            if len(request.context) == block_size:
                with self._failing_alone(request):
                    self._prefill(row, request, shifted_context(request.context, block_size))
        self._drop_failed()
        if not self.active:
            return
        self.cache.select(0, len(self.active))
        tokens = torch.tensor([[r.pending] for r in self.active], device=self.device)  # (B, 1)
        with autocast(self.device):
            logits, _ = self.model(tokens, cache=self.cache)
        logits = logits[:, -1].float()  # (B, vocab)
        for request in self.active:
            request.context.append(request.pending)
        logprobs = logits.log_softmax(dim=-1) if any(r.top_logprobs is not None for r in self.active) else None
        finished = []
        for row, (request, token) in enumerate(zip(self.active, self._sample(logits), strict=True)):
            if request.failed:
                continue
            with self._failing_alone(request):
                event = self._event(request, token, logprobs[row] if logprobs is not None else None)
                if event.finish_reason is not None:
                    finished.append(request)
                else:
                    request.pending = token
                request.on_event(event)
        for request in finished:
            self._remove(request)

    @contextlib.contextmanager
    def _failing_alone(self, request: Request) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self._fail(request, exc)

    def _fail(self, request: Request, exc: Exception) -> None:
        """End `request` with an error event; it leaves the engine at the end of the step."""
        if request.failed:
            return
        request.failed = True
        with contextlib.suppress(Exception):  # a callback that raises cannot be told more
            request.on_event(
                TokenEvent("", finish_reason="error", error=f"decoding failed ({type(exc).__name__}: {exc})")
            )

    def _sample(self, logits: torch.Tensor) -> list[int]:
        """Every row's next token: rows with the same sampling settings in one call, each row drawing its
        random number from its own request's generator."""
        groups: list[tuple[SamplingConfig, list[int]]] = []
        for row, request in enumerate(self.active):
            for config, rows in groups:
                if config == request.sampling:
                    rows.append(row)
                    break
            else:
                groups.append((request.sampling, [row]))
        tokens = [0] * len(self.active)
        for config, rows in groups:
            try:
                uniforms = None
                if config.temperature > 0:
                    draws = [torch.rand(1, generator=self.active[r].generator, device=self.device) for r in rows]
                    uniforms = torch.cat(draws)
                for row, token in zip(rows, sample_next(logits[rows], config, None, uniforms).tolist(), strict=True):
                    tokens[row] = token
            except Exception as exc:  # these settings broke: the requests that share them fail, not the others
                for row in rows:
                    self._fail(self.active[row], exc)
        return tokens

    def _admit(self) -> None:
        with self._wakeup:
            joining = []
            while self.waiting and len(self.active) + len(joining) < self.max_batch:
                request = self.waiting.popleft()
                if not request.cancelled:
                    joining.append(request)
        block_size = self.model.config.block_size
        for request in joining:
            row = len(self.active)
            self.active.append(request)
            with self._failing_alone(request):
                request.generator = torch.Generator(device=self.device)
                if request.seed is None:
                    request.generator.seed()
                else:
                    seed_generator(request.generator, request.seed)
                request.streamer = StopStreamer(self.tokenizer, request.stop)
                prompt = prompt_window(request.prompt, block_size)
                self._prefill(row, request, prompt[:-1])
                request.pending = prompt[-1]

    def _prefill(self, row: int, request: Request, context: list[int]) -> None:
        """Make row `row` of the cache hold exactly `context` (the next step feeds `request.pending`)."""
        self.cache.clear(row)
        request.context = list(context)
        if context:
            self.cache.select(row, row + 1)
            with autocast(self.device):
                self.model(torch.tensor([context], device=self.device), cache=self.cache)

    def _event(self, request: Request, token: int, logprobs: torch.Tensor | None) -> TokenEvent:
        request.generated.append(token)
        event = TokenEvent(text="", token=token)
        if logprobs is not None:
            event.logprob = float(logprobs[token])
            if request.top_logprobs:
                values, ids = torch.topk(logprobs, min(request.top_logprobs, logprobs.numel()))
                event.top = list(zip(ids.tolist(), values.tolist(), strict=True))
        if token in self.end_of_text:
            event.text, event.finish_reason = request.streamer.finish(), "stop"
            return event
        event.text = request.streamer.push(token)
        if request.streamer.stopped:
            event.finish_reason = "stop"
        elif len(request.generated) >= request.max_tokens:
            event.text += request.streamer.finish()
            event.finish_reason = "length"
        return event

    def _drop_cancelled(self) -> None:
        for request in [r for r in self.active if r.cancelled]:
            self._remove(request)

    def _drop_failed(self) -> None:
        for request in [r for r in self.active if r.failed]:
            self._remove(request)

    def _remove(self, request: Request) -> None:
        """Free the request's row; the last busy row moves into the gap so busy rows stay at the front."""
        row, last = self.active.index(request), len(self.active) - 1
        if row != last:
            self.cache.move(last, row)
            self.active[row] = self.active[last]
        self.cache.clear(last)
        self.active.pop()
