"""The decoding engine in a process of its own: what `lucidlm serve` runs.

CPython runs the Python of one thread at a time (the GIL). With the engine in the server's process, the
engine's Python (a step of a small model is mostly Python: some fifty module calls) and the HTTP side's
Python (parsing requests, writing one server-sent event per token) take turns on one core, however many the
machine has. In a process of its own the engine has a core to itself and the HTTP side another, as vLLM's
engine core does (benchmarks/serve_load.py has the figures).

`EngineProcess` answers like `Engine` (submit, cancel, load, start, stop), so the API does not know which it
has. The parent keeps the callers' `Request` objects; the child runs an `Engine` over copies of them.
Messages, each one pickled object on a pipe:

    parent -> child   ("submit", id, Request without its callback)   ("cancel", id)   ("stop",)
    child -> parent   [(id, TokenEvent), ...]: every event of one step in one message
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import signal
import threading
from multiprocessing.connection import Connection

import torch

from lucidlm.model import GPT, GPTConfig
from lucidlm.model.onednn import decode_with_onednn
from lucidlm.serve.engine import Engine, QueueFull, Request, TokenEvent
from lucidlm.tokenizers import Tokenizer


class EngineStopped(Exception):
    """The engine's process has ended (killed, or out of memory); the server cannot decode any more."""


def engine_main(
    config: GPTConfig,
    state: dict[str, torch.Tensor],
    tokenizer: Tokenizer,
    device: str,
    threads: int,
    max_batch: int,
    connection: Connection,
) -> None:
    """The child: rebuild the model, then alternate between reading messages and taking decoding steps."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is the parent's to handle
    torch.set_num_threads(threads)
    model = GPT(config)
    model.load_state_dict(state)
    model = model.to(device).eval()
    decode_with_onednn(model)
    # the parent enforces the waiting line's length, so the child's engine never refuses
    engine = Engine(model, tokenizer, max_batch=max_batch, max_waiting=1 << 30)
    requests: dict[int, Request] = {}
    outbox: list[tuple[int, TokenEvent]] = []
    try:
        while True:
            busy = bool(engine.active or engine.waiting)
            while connection.poll(0 if busy else None):  # block only when there is nothing to decode
                message = connection.recv()
                if message[0] == "stop":
                    return
                if message[0] == "submit":
                    _, request_id, request = message
                    request.on_event = lambda event, request_id=request_id: outbox.append((request_id, event))
                    requests[request_id] = request
                    engine.submit(request)
                elif message[0] == "cancel" and message[1] in requests:
                    engine.cancel(requests.pop(message[1]))
                busy = True
            engine.step()
            if outbox:
                connection.send(outbox)
                for request_id, event in outbox:
                    if event.finish_reason is not None:
                        requests.pop(request_id, None)
                outbox.clear()
    except (EOFError, OSError):  # the parent went away
        return


class EngineProcess:
    def __init__(self, model: GPT, tokenizer: Tokenizer, max_batch: int = 16, max_waiting: int = 64, threads: int = 1):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_waiting, self.threads = max_batch, max_waiting, threads
        self.requests: dict[int, Request] = {}  # submitted and not yet finished or cancelled
        self.next_id = 0
        self.stopped: str | None = None  # why the engine can no longer decode
        self._lock = threading.Lock()  # guards `requests` and the pipe's sending end
        self.process: multiprocessing.Process | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # fork would copy the server's threads and locks
        self._connection, child_end = context.Pipe()
        state = {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}
        device = str(self.model.lm_head.weight.device)
        args = (self.model.config, state, self.tokenizer, device, self.threads, self.max_batch, child_end)
        self.process = context.Process(target=engine_main, args=args, name="lucidlm-engine", daemon=True)
        self.process.start()
        child_end.close()
        self._reader = threading.Thread(target=self._read_events, name="lucidlm-engine-reader", daemon=True)
        self._reader.start()

    def stop(self) -> None:
        if self.process is None:
            return
        self.stopped = self.stopped or "the server is shutting down"
        with self._lock, contextlib.suppress(OSError):  # the child may be gone already
            self._connection.send(("stop",))
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        self._reader.join(timeout=10)
        self.process = None

    def submit(self, request: Request) -> None:
        if self.stopped:
            raise EngineStopped(self.stopped)
        if not request.prompt:
            raise ValueError("a request needs at least one prompt token")
        with self._lock:
            if len(self.requests) >= self.max_batch + self.max_waiting:
                running = min(len(self.requests), self.max_batch)
                raise QueueFull(f"{running} requests running and {len(self.requests) - running} waiting")
            request_id, self.next_id = self.next_id, self.next_id + 1
            request.engine_id = request_id
            self.requests[request_id] = request
            self._connection.send(("submit", request_id, dataclasses.replace(request, on_event=None)))

    def cancel(self, request: Request) -> None:
        request.cancelled = True
        with self._lock:
            if self.requests.pop(request.engine_id, None) is not None:
                with contextlib.suppress(OSError):
                    self._connection.send(("cancel", request.engine_id))

    def load(self) -> tuple[int, int]:
        """(running, waiting) request counts, as the parent knows them."""
        outstanding = len(self.requests)
        return min(outstanding, self.max_batch), max(0, outstanding - self.max_batch)

    def _read_events(self) -> None:
        """Hand each step's events to their requests, in the parent (this thread runs the callbacks)."""
        process = self.process
        while True:
            try:
                events = self._connection.recv()
            except (EOFError, OSError):
                break
            for request_id, event in events:
                request = self.requests.get(request_id)
                if request is None:  # cancelled while the step ran
                    continue
                request.generated.append(event.token)
                if event.finish_reason is not None:
                    with self._lock:
                        self.requests.pop(request_id, None)
                request.on_event(event)
        # The pipe closed: the child is gone. Every unfinished request ends with the reason.
        process.join(timeout=5)
        self.stopped = self.stopped or f"the decoding engine's process ended (exit code {process.exitcode})"
        with self._lock:
            orphans, self.requests = list(self.requests.values()), {}
        for request in orphans:
            request.on_event(TokenEvent("", finish_reason="error", error=self.stopped, engine_ended=True))
