"""The OpenAI routes of `lucidlm serve`: /v1/models, /v1/completions and /v1/chat/completions, in the shapes of
OpenAI's API (responses, streamed chunks, logprobs, usage), so its official clients work unchanged."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from lucidlm.chat import chat_prompt
from lucidlm.chat.tools import CallHoldback, parse_tool_calls
from lucidlm.errors import LucidError
from lucidlm.serve.engine import Engine, TokenEvent
from lucidlm.serve.engine_process import EngineProcess
from lucidlm.serve.schemas import (
    ChatBody,
    CompletionBody,
    ServerSettings,
    check_sampling,
    encode_text,
    offered_tools,
)
from lucidlm.serve.streaming import Generation, sse
from lucidlm.tokenizers import Tokenizer
from lucidlm.web.http import CLIENT_GONE, APIError, parse_body


def add_openai_routes(
    app: FastAPI, tokenizer: Tokenizer, settings: ServerSettings, engine: Engine | EngineProcess
) -> None:
    def model_card() -> dict:
        return {"id": settings.model_id, "object": "model", "created": 0, "owned_by": "lucidlm"}

    def check_model(name: str) -> None:
        if name != settings.model_id:
            raise APIError(404, f"the model `{name}` does not exist; this server has `{settings.model_id}`", "model")

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        check_model(name)
        return model_card()

    def token_text(token: int) -> str:
        return tokenizer.decode([token])

    def completion_logprobs(events: list[TokenEvent], offset: int = 0) -> dict:
        """The legacy completions API's logprobs of some tokens, the first at character `offset`."""
        pieces = [token_text(e.token) for e in events]
        return {
            "tokens": pieces,
            "token_logprobs": [e.logprob for e in events],
            "top_logprobs": [{token_text(t): lp for t, lp in e.top} for e in events],
            "text_offset": [offset + start for start in running_offsets(pieces)],
        }

    def envelope(run: Generation, kind: str, choices: list[dict]) -> dict:
        """What every response and every streamed chunk of `run` wraps its choices in."""
        return {"id": run.id, "object": kind, "created": run.created, "model": settings.model_id, "choices": choices}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body: CompletionBody = await parse_body(request, CompletionBody)
        check_model(body.model)
        sampling = check_sampling(body, settings, default_max_tokens=16)
        for param, supported in (
            ("echo", body.echo is False),
            ("suffix", body.suffix is None),
            ("best_of", body.best_of in (None, 1)),
        ):
            if not supported:
                raise APIError(400, f"{param} is not supported by this server", param)
        if body.logprobs is not None and not 0 <= body.logprobs <= 5:
            raise APIError(400, f"logprobs must lie in 0..5 (got {body.logprobs})", "logprobs")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or len(prompts) * body.n > settings.max_choices:
            raise APIError(400, f"prompts x n must lie in 1..{settings.max_choices}", "prompt")
        encoded = [encode_text(tokenizer, text, "prompt") for text in prompts]
        run = Generation(engine, body, sampling, encoded, body.logprobs, "cmpl")

        text_offset = [0] * len(run.requests)  # characters of token text streamed so far, per choice

        def choice_chunk(index: int, event: TokenEvent) -> dict:
            logprobs = None
            if body.logprobs is not None:
                logprobs = completion_logprobs([event], text_offset[index])
                text_offset[index] += len(logprobs["tokens"][0])
            choice = {"text": event.text, "index": index, "logprobs": logprobs, "finish_reason": event.finish_reason}
            return envelope(run, "text_completion", [choice])

        if body.stream:
            return sse(run, choice_chunk, envelope(run, "text_completion", []), body.stream_options)
        events = await run.collect(request)
        if events is None:
            return Response(status_code=CLIENT_GONE)
        choices = []
        for index, choice_events in enumerate(events):
            text = "".join(e.text for e in choice_events)
            logprobs = completion_logprobs(choice_events) if body.logprobs is not None else None
            finish = choice_events[-1].finish_reason
            choices.append({"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish})
        return {**envelope(run, "text_completion", choices), "usage": run.usage()}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body: ChatBody = await parse_body(request, ChatBody)
        check_model(body.model)
        if body.max_completion_tokens is not None:
            body.max_tokens = body.max_completion_tokens
        sampling = check_sampling(body, settings, default_max_tokens=256)
        tools = offered_tools(body)
        if not body.messages:
            raise APIError(400, "messages must hold at least one message", "messages")
        top = body.top_logprobs or 0
        if not 0 <= top <= 20 or (top and not body.logprobs):
            raise APIError(400, "top_logprobs must lie in 0..20 and needs logprobs: true", "top_logprobs")
        messages = [m.template_message(i) for i, m in enumerate(body.messages)]
        try:
            prompt, stops = chat_prompt(tokenizer, messages, tools)
        except LucidError as exc:
            raise APIError(400, str(exc), "tools" if tools and "tool" in str(exc) else "messages") from None
        body.stop = [*body.stop, *stops]
        encoded = [prompt]
        run = Generation(engine, body, sampling, encoded, top if body.logprobs else None, "chatcmpl")

        def token_logprob(token: int, logprob: float) -> dict:
            text = token_text(token)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        def logprob_entry(event: TokenEvent) -> dict:
            return {
                **token_logprob(event.token, event.logprob),
                "top_logprobs": [token_logprob(t, lp) for t, lp in event.top],
            }

        if body.stream:
            first = [True] * len(run.requests)  # a choice's first chunk names the role
            # with tools, a choice's text from a call marker on waits for the end, to go out as tool_calls
            holdbacks = [CallHoldback() if tools else None for _ in run.requests]

            def chunk(index: int, event: TokenEvent) -> dict:
                text, calls, finish = event.text, [], event.finish_reason
                holdback = holdbacks[index]
                if holdback is not None:
                    text = holdback.push(text)
                    if finish is not None:
                        rest, calls = holdback.finish()
                        text += rest
                delta = {"content": text} if text or finish is None else {}
                if calls:
                    delta["tool_calls"] = [{"index": i, **call.message()} for i, call in enumerate(calls)]
                    finish = "tool_calls"
                if first[index]:
                    delta["role"], first[index] = "assistant", False
                logprobs = {"content": [logprob_entry(event)]} if body.logprobs else None
                choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
                return envelope(run, "chat.completion.chunk", [choice])

            return sse(run, chunk, envelope(run, "chat.completion.chunk", []), body.stream_options)
        events = await run.collect(request)
        if events is None:
            return Response(status_code=CLIENT_GONE)
        choices = []
        for index, choice_events in enumerate(events):
            text, calls = "".join(e.text for e in choice_events), []
            if tools:
                text, calls = parse_tool_calls(text)
            message: dict = {"role": "assistant", "content": text or (None if calls else "")}
            if calls:
                message["tool_calls"] = [call.message() for call in calls]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": {"content": [logprob_entry(e) for e in choice_events]} if body.logprobs else None,
                    "finish_reason": "tool_calls" if calls else choice_events[-1].finish_reason,
                }
            )
        return {**envelope(run, "chat.completion", choices), "usage": run.usage()}


def running_offsets(pieces: list[str]) -> list[int]:
    offsets, total = [], 0
    for piece in pieces:
        offsets.append(total)
        total += len(piece)
    return offsets
