"""The decoding engine behind `lucidlm serve`: every busy request advances by one token per batched step.

Decoding one token costs about as much for 8 sequences as for 1 on a small model (the time goes to reading
the weights and to Python, not to arithmetic), so the engine keeps every request in a row of one decoder
(decode.py: the one decoding step that `generate`, chat and GRPO use too) and advances them together.
Requests join and leave between steps:

    step:  admit waiting requests (each reads its prompt into a free row of the cache: "prefill")
           the decoder's step: shift full windows, one forward pass over every busy row, each row samples
           its next token with its own random generator and its stop rules
           each request reports its token; requests that are finished or cancelled leave

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

from lucidlm.decode import Decoder, Row, SamplingConfig, StopStreamer, seed_generator
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
    generated: list[int] = field(default_factory=list)  # filled in by the engine
    row: Row | None = None  # its row in the decoder, while it is there
    engine_id: int = -1  # EngineProcess's number for it in messages to its process


class Engine:
    def __init__(self, model: GPT, tokenizer: Tokenizer, max_batch: int = 16, max_waiting: int = 64):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_batch, self.max_waiting = max_batch, max_waiting
        self.device = model.lm_head.weight.device
        self.decoder = Decoder(model, max_batch)
        self.waiting: deque[Request] = deque()
        self.end_of_text = frozenset(tokenizer.eos_ids)
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

    @property
    def active(self) -> list[Request]:
        """The requests decoding now, in the order of their rows."""
        return [row.owner for row in self.decoder.rows]

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
        self._drop_failed()
        if not self.decoder.rows:
            return
        self.decoder.step(failed=lambda row, exc: self._fail(row.owner, exc))
        for row in list(self.decoder.rows):
            request: Request = row.owner
            with self._failing_alone(request):
                request.on_event(self._event(request))
            if row.finish_reason is not None:
                self._remove(request)

    def _event(self, request: Request) -> TokenEvent:
        """What the request learns of the token its row took in this step."""
        row = request.row
        return TokenEvent(row.text, row.generated[-1], row.logprob, row.top, finish_reason=row.finish_reason)

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
        if request.row is not None:
            request.row.failed = True
        with contextlib.suppress(Exception):  # a callback that raises cannot be told more
            request.on_event(
                TokenEvent("", finish_reason="error", error=f"decoding failed ({type(exc).__name__}: {exc})")
            )

    def _admit(self) -> None:
        with self._wakeup:
            joining = []
            while self.waiting and len(self.active) + len(joining) < self.max_batch:
                request = self.waiting.popleft()
                if not request.cancelled:
                    joining.append(request)
        for request in joining:
            request.row = Row(
                request.sampling,
                request.max_tokens,
                ends=self.end_of_text,
                top_logprobs=request.top_logprobs,
                owner=request,
                generated=request.generated,
            )
            with self._failing_alone(request):
                request.row.generator = torch.Generator(device=self.device)
                if request.seed is None:
                    request.row.generator.seed()
                else:
                    seed_generator(request.row.generator, request.seed)
                request.row.streamer = StopStreamer(self.tokenizer, request.stop)
                self.decoder.add(request.row, request.prompt)

    def _drop_cancelled(self) -> None:
        for request in [r for r in self.active if r.cancelled]:
            self._remove(request)

    def _drop_failed(self) -> None:
        for request in [r for r in self.active if r.failed]:
            self._remove(request)

    def _remove(self, request: Request) -> None:
        if request.row in self.decoder.rows:
            self.decoder.remove(request.row)
        request.row = None
