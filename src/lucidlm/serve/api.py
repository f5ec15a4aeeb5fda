"""`lucidlm serve`: an OpenAI-compatible HTTP API over one trained model, and the model inspector page.

Endpoints (the OpenAI API's shapes, so the official `openai` client and tools built on it work unchanged):
    GET  /v1/models, /v1/models/{id}
    POST /v1/completions        prompt: a string or a list of strings
    POST /v1/chat/completions   messages through the model's chat template (chat/template.py)
    GET  /api/model             the inspector: config and parameter count
    POST /api/attention         the inspector: every layer's and head's attention weights for a text
    POST /api/explain           the forward pass at one position, every intermediate (explain.py)
    GET  /                      the inspector page (static files, no CDN)
    GET  /explain/              the forward pass step by step: the exported page's explainer, with the numbers
                                from /api/explain (`export --format web` runs the same page on gpt.js)

Errors are OpenAI's error object `{"error": {"message", "type", "param", "code"}}`:
    400 a value out of range, a prompt with symbols the vocabulary lacks, malformed JSON
    404 an unknown model or path           413 a request body over the server's limit
    422 a field of the wrong type, or a required field missing
    429 every decoding row busy and the waiting line full (the client may retry)
    503 the decoding engine's process has ended (a stream that was running ends with an error event)

Limits: a prompt longer than the model's context keeps its last block_size tokens (as `lucidlm generate`
does); generation past the context shifts the window. `max_tokens` above the server's cap is refused.
Sampling settings a model of this kind does not have (penalties, logit_bias, tools) are refused by name.
The server never executes code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, ValidationError

from lucidlm.chat import chat_prompt
from lucidlm.errors import LucidError
from lucidlm.explain import explain
from lucidlm.files import parse_json
from lucidlm.generate import SamplingConfig, encode_prompt
from lucidlm.model import GPT
from lucidlm.model.config import shown_integer
from lucidlm.serve.engine import Engine, QueueFull, TokenEvent
from lucidlm.serve.engine import Request as EngineRequest
from lucidlm.serve.engine_process import EngineProcess, EngineStopped
from lucidlm.tokenizers import Tokenizer

STATIC = Path(__file__).parent / "static"
WEB_STATIC = Path(__file__).parents[1] / "export" / "web" / "static"  # the explainer page, shared with the export
EXPLAIN_TOKENS = 256  # the explainer's answer holds a (T, T) heatmap: the text's last 256 tokens at most
CLIENT_GONE = 499  # nginx's "client closed request": the status of an answer nobody reads


@dataclass
class ServerSettings:
    model_id: str = "lucidlm"
    max_tokens: int = 2048  # the most tokens one choice may ask for
    max_body_bytes: int = 1_000_000
    max_choices: int = 16  # prompts x n in one request
    allowed_origins: tuple[str, ...] = ()  # web pages (scheme://host:port) that may call the API from a browser


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class ASCIIJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error message that quotes the request cannot fail to
    encode, whatever text the request held."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def error_response(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
    return ASCIIJSONResponse(error_body(message, param, kind), status_code=status)


# --- requests ---------------------------------------------------------------------------------------------


class SamplingFields(BaseModel):
    """The fields completions and chat share. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None  # not in OpenAI's API; vLLM and llama.cpp accept it too
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    response_format: dict[str, Any] | None = None


class CompletionBody(SamplingFields):
    prompt: str | list[str]
    logprobs: int | None = None  # 0..5 candidates per token, as in OpenAI's legacy completions
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """A message as OpenAI's clients send it: content as text, as a list of parts, or null (an assistant
    message that only called a tool)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self, index: int) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise APIError(
                    400,
                    f"messages[{index}] has a content part of type {part.type!r}; this model reads text only",
                    f"messages.{index}.content",
                )
        return "".join(part.text for part in self.content)


class ChatBody(SamplingFields):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None


class AttentionBody(BaseModel):
    text: str


class ExplainBody(BaseModel):
    text: str | None = None  # the text, or
    ids: list[int] | None = None  # its token ids (as an earlier answer gave them)
    position: int = -1  # counted from the end when negative, as in Python
    layer: int = 0  # the head whose weights at every position the heatmap shows
    head: int = 0


def add_error_handlers(app: FastAPI) -> None:
    """Every error an app answers, its own and the router's (404, 405), in OpenAI's error shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.kind)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception):
        return error_response(404, f"no such path: {request.url.path}")

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc: Exception):
        return error_response(405, f"{request.method} is not allowed on {request.url.path}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug: this request fails, the server goes on
        return error_response(500, f"internal error ({type(exc).__name__}); the server goes on", kind="server_error")


MAX_JSON_DEPTH = 32  # no request of this API nests deeper than a few levels


async def parse_body(request: Request, schema: type[BaseModel]) -> Any:
    """The JSON body as `schema`: 400 for what is not JSON, nests too deep or holds text that is not Unicode
    (a lone surrogate such as "\\ud800"), 422 for a field of the wrong type."""
    try:
        data = parse_json(await request.body())
    except RecursionError:
        raise APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise APIError(400, f"the request body is {exc}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
        raise APIError(400, f"the request body holds {bad}, a lone surrogate that is not Unicode text") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(422, f"{param}: {first['msg']}", param) from None


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (0 for a plain value), without recursion."""
    depth, level = 0, [value]
    while level:
        containers = [v for v in level if isinstance(v, (list, dict))]
        if not containers:
            return depth
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return depth
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return depth


def check_sampling(body: SamplingFields, settings: ServerSettings, default_max_tokens: int) -> SamplingConfig:
    """Range checks (400, naming the field) and the SamplingConfig the engine runs with."""
    if body.max_tokens is None:
        body.max_tokens = min(default_max_tokens, settings.max_tokens)
    checks = [
        ("max_tokens", 1 <= body.max_tokens <= settings.max_tokens, f"must lie in 1..{settings.max_tokens}"),
        ("temperature", math.isfinite(body.temperature) and 0 <= body.temperature <= 2, "must lie in [0, 2]"),
        ("top_p", math.isfinite(body.top_p) and 0 < body.top_p <= 1, "must lie in (0, 1]"),
        ("top_k", body.top_k is None or body.top_k >= 1, "must be at least 1"),
        ("n", 1 <= body.n <= settings.max_choices, f"must lie in 1..{settings.max_choices}"),
        ("seed", body.seed is None or -(2**63) <= body.seed < 2**64, "must be a 64-bit integer"),
        ("response_format", body.response_format in (None, {"type": "text"}), "other than text is not supported"),
        ("presence_penalty", body.presence_penalty == 0, "is not supported by this server; leave it at 0"),
        ("frequency_penalty", body.frequency_penalty == 0, "is not supported by this server; leave it at 0"),
        ("logit_bias", not body.logit_bias, "is not supported by this server"),
    ]
    for param, ok, rule in checks:
        if not ok:
            value = getattr(body, param)
            shown = shown_integer(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
            raise APIError(400, f"{param} {rule} (got {shown})", param)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise APIError(400, "stop takes at most 4 strings", "stop")
    body.stop = stop
    return SamplingConfig(body.temperature, body.top_k, body.top_p)


# --- the app ----------------------------------------------------------------------------------------------


class BodyLimit:
    """Refuse (413) any request body larger than `limit` bytes, declared or streamed, before reading it all."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise APIError(413, f"the request body is larger than this server's limit of {self.limit} bytes")
            return message

        return await self.app(scope, counted_receive, send)

    async def _refuse(self, scope, receive, send):
        message = f"the request body is larger than this server's limit of {self.limit} bytes"
        await error_response(413, message)(scope, receive, send)


def loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


class BrowserGuard:
    """Refuse what a web page the user visits could make a browser send here (403):
    - a Host that is not this server's own loopback name (a DNS-rebinding page reaching 127.0.0.1 under its
      own name), checked when the server listens on a loopback address;
    - an Origin other than the server itself and the `allowed` ones (a cross-site page posting a request).
    Clients that are not browsers send no Origin and are not affected."""

    def __init__(self, app, allowed: tuple[str, ...] = ()):
        self.app, self.allowed = app, set(allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        address, port = scope.get("server") or (None, None)
        if loopback(address):
            names = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
            if host not in names and not (port == 80 and f"{host}:80" in names):
                message = f"this server answers only as 127.0.0.1:{port} or localhost:{port}, not as {host!r}"
                return await error_response(403, message, kind="forbidden")(scope, receive, send)
        origin = headers.get(b"origin")
        if origin is not None:
            origin = origin.decode("latin-1")
            if origin != f"http://{host}" and origin not in self.allowed:
                message = f"requests from the web page {origin} are refused; allow it with --allow-origin {origin}"
                return await error_response(403, message, kind="forbidden")(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(
    model: GPT,
    tokenizer: Tokenizer,
    settings: ServerSettings | None = None,
    engine: Engine | EngineProcess | None = None,
) -> FastAPI:
    """The FastAPI app; its engine starts and stops with the app (uvicorn's lifespan)."""
    settings = settings or ServerSettings()
    engine = engine or Engine(model, tokenizer)

    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="lucidlm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.allowed_origins:  # their browsers' preflight requests and CORS headers
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.allowed_origins), allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(BrowserGuard, allowed=settings.allowed_origins)  # the outermost: refuse first

    add_error_handlers(app)

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

    def encode(text: str, param: str) -> list[int]:
        try:
            return encode_prompt(tokenizer, text)
        except LucidError as exc:
            raise APIError(400, str(exc), param) from None

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
        encoded = [encode(text, "prompt") for text in prompts]
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
        for param in ("tools", "functions", "function_call"):
            if getattr(body, param):
                raise APIError(400, f"{param} are not supported by this server (this model cannot call tools)", param)
        if body.tool_choice not in (None, "none"):
            raise APIError(400, "tool_choice is not supported by this server", "tool_choice")
        if not body.messages:
            raise APIError(400, "messages must hold at least one message", "messages")
        top = body.top_logprobs or 0
        if not 0 <= top <= 20 or (top and not body.logprobs):
            raise APIError(400, "top_logprobs must lie in 0..20 and needs logprobs: true", "top_logprobs")
        messages = [{"role": m.role, "content": m.text(i)} for i, m in enumerate(body.messages)]
        try:
            prompt, stops = chat_prompt(tokenizer, messages)
        except LucidError as exc:
            raise APIError(400, str(exc), "messages") from None
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

            def chunk(index: int, event: TokenEvent) -> dict:
                delta = {"content": event.text} if event.text or event.finish_reason is None else {}
                if first[index]:
                    delta["role"], first[index] = "assistant", False
                logprobs = {"content": [logprob_entry(event)]} if body.logprobs else None
                choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": event.finish_reason}
                return envelope(run, "chat.completion.chunk", [choice])

            return sse(run, chunk, envelope(run, "chat.completion.chunk", []), body.stream_options)
        events = await run.collect(request)
        if events is None:
            return Response(status_code=CLIENT_GONE)
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": "".join(e.text for e in choice_events)},
                "logprobs": {"content": [logprob_entry(e) for e in choice_events]} if body.logprobs else None,
                "finish_reason": choice_events[-1].finish_reason,
            }
            for index, choice_events in enumerate(events)
        ]
        return {**envelope(run, "chat.completion", choices), "usage": run.usage()}

    @app.get("/api/model")
    async def describe_model():
        return {
            "id": settings.model_id,
            "config": asdict(model.config),
            "parameters": model.num_params(include_position_embeddings=True),
            "tokenizer": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
        }

    @app.post("/api/attention")
    async def attention(request: Request):
        body: AttentionBody = await parse_body(request, AttentionBody)
        if not body.text:
            raise APIError(400, "text must not be empty", "text")
        tokens = encode(body.text, "text")[-model.config.block_size :]
        weights = await asyncio.to_thread(attention_weights, model, tokens)
        return {
            "tokens": [token_text(t) for t in tokens],
            "weights": [[[[round(w, 4) for w in row] for row in head] for head in layer] for layer in weights],
        }

    @app.post("/api/explain")
    async def explain_position(request: Request):
        body: ExplainBody = await parse_body(request, ExplainBody)
        if (body.text is None) == (body.ids is None):
            raise APIError(400, "give the text or its ids, one of the two", "text")
        if body.ids is not None and not all(0 <= i < tokenizer.vocab_size for i in body.ids):
            raise APIError(400, f"ids must lie in [0, {tokenizer.vocab_size})", "ids")
        ids = (encode(body.text, "text") if body.ids is None else body.ids)[-EXPLAIN_TOKENS:]
        position = body.position + len(ids) if body.position < 0 else body.position
        if not ids or not 0 <= position < len(ids):
            raise APIError(400, f"position {body.position} is outside the text's {len(ids)} tokens", "position")
        try:
            view = await asyncio.to_thread(explain, model, ids, position, body.layer, body.head)
        except ValueError as exc:
            raise APIError(400, str(exc), "layer") from None
        return {**view, "texts": [token_text(i) for i in ids]}

    @app.get("/")
    async def inspector():
        return FileResponse(STATIC / "index.html")

    @app.get("/explain/")
    async def explainer():
        return FileResponse(WEB_STATIC / "index.html")

    @app.get("/explain/model.json")
    async def explainer_model():
        parameters = model.num_params(include_position_embeddings=True)
        config = asdict(model.config)
        return {"source": "api", "model_id": settings.model_id, "parameters": parameters, "config": config}

    @app.get("/explain/{name}")
    async def explainer_file(name: str):
        if name == "style.css":
            return FileResponse(STATIC / name, media_type="text/css")
        if name not in ("explain.js", "gpt.js", "tokenizer.js"):
            raise APIError(404, f"no such file: /explain/{name}")
        return FileResponse(WEB_STATIC / name, media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


@torch.inference_mode()
def attention_weights(model: GPT, tokens: list[int]) -> list:
    """(layers, heads, T, T) attention weights for one sequence, from the hook points `attn.hook_pattern`."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.config.n_layer)]
    _, cache = model.run_with_cache(torch.tensor([tokens], device=model.lm_head.weight.device), names)
    return torch.stack([cache[name][0] for name in names]).float().tolist()


def running_offsets(pieces: list[str]) -> list[int]:
    offsets, total = [], 0
    for piece in pieces:
        offsets.append(total)
        total += len(piece)
    return offsets


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
