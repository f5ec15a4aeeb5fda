"""A request's choices running in the decoding engine, delivered into the server's event loop: collected
whole, or streamed as server-sent events, with the engine's rows freed as soon as the client goes away."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from lucidlm.decode import SamplingConfig
from lucidlm.serve.engine import Engine, QueueFull, TokenEvent
from lucidlm.serve.engine import Request as EngineRequest
from lucidlm.serve.engine_process import EngineProcess, EngineStopped
from lucidlm.serve.schemas import SamplingFields
from lucidlm.web.http import APIError, error_body


class Generation:
    """One HTTP request's choices (prompts x n) running in the engine, delivered into this event loop."""

    def __init__(
        self,
        engine: Engine | EngineProcess,
        body: SamplingFields,
        sampling: SamplingConfig,
        prompts: list[list[int]],
        top_logprobs: int | None,
        prefix: str,
    ):
        self.id, self.created = f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.queue: asyncio.Queue[tuple[int, TokenEvent]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.engine, self.requests = engine, []
        for p, prompt in enumerate(prompts):
            for j in range(body.n):
                index = p * body.n + j

                def deliver(event: TokenEvent, index: int = index) -> None:
                    loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

                seed = None if body.seed is None else (body.seed + j) % 2**64  # choices of one request differ
                self.requests.append(
                    EngineRequest(prompt, body.max_tokens, sampling, deliver, body.stop, seed, top_logprobs)
                )
        try:
            for request in self.requests:
                engine.submit(request)
        except QueueFull as exc:
            self.cancel()
            raise APIError(429, f"the server is busy ({exc}); retry shortly", kind="server_busy") from None
        except EngineStopped as exc:
            self.cancel()
            raise APIError(503, f"{exc}; restart the server", kind="server_error") from None

    def cancel(self) -> None:
        for request in self.requests:
            self.engine.cancel(request)

    def usage(self) -> dict:
        completion = sum(len(r.generated) for r in self.requests)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    async def batches(self) -> AsyncIterator[list[tuple[int, TokenEvent]]]:
        """Every event of every choice until all have finished, in batches: what arrived while the last
        batch was being sent goes out together (fewer, larger writes when the engine runs ahead)."""
        running = len(self.requests)
        try:
            while running:
                batch = [await self.queue.get()]
                while not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                running -= sum(event.finish_reason is not None for _, event in batch)
                broken = next((event for _, event in batch if event.finish_reason == "error"), None)
                if broken is not None and broken.engine_ended:
                    raise APIError(503, f"{broken.error}; restart the server", kind="server_error")
                if broken is not None:
                    raise APIError(
                        500, f"{broken.error}; the server goes on, retry or change the request", kind="server_error"
                    )
                yield batch
        finally:
            self.cancel()  # a client that went away frees its rows at the engine's next step

    async def collect(self, request: Request) -> list[list[TokenEvent]] | None:
        """Every choice's events, or None if the client hung up first (its rows are then freed at once
        rather than decoded to max_tokens for nobody)."""
        gathering = asyncio.ensure_future(self._gather())
        watching = asyncio.ensure_future(until_disconnected(request))
        done, _ = await asyncio.wait({gathering, watching}, return_when=asyncio.FIRST_COMPLETED)
        watching.cancel()
        if gathering in done:
            return gathering.result()
        gathering.cancel()  # batches()'s `finally` cancels the engine's requests
        return None

    async def _gather(self) -> list[list[TokenEvent]]:
        events: list[list[TokenEvent]] = [[] for _ in self.requests]
        async for batch in self.batches():
            for index, event in batch:
                events[index].append(event)
        return events


async def until_disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read, so only that message is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def sse(
    run: Generation, chunk: Callable[[int, TokenEvent], dict], usage_envelope: dict, options: dict | None
) -> StreamingResponse:
    """Server-sent events: one `data: {json}` per event, then a usage chunk when asked for, then [DONE]."""
    include_usage = bool((options or {}).get("include_usage"))

    async def stream() -> AsyncIterator[str]:
        try:
            async for batch in run.batches():
                yield "".join(f"data: {json.dumps(chunk(index, event))}\n\n" for index, event in batch)
        except APIError as exc:  # the response has begun: the error goes out as an event, as OpenAI's do
            yield f"data: {json.dumps(error_body(exc.message, exc.param, exc.kind))}\n\n"
            yield "data: [DONE]\n\n"
            return
        if include_usage:
            yield f"data: {json.dumps({**usage_envelope, 'usage': run.usage()})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
