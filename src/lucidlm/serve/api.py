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

This file assembles the app; each concern has its own: the routes (openai.py, inspector.py), what a request
may say (schemas.py), a request's choices in the engine and their streaming (streaming.py), and the HTTP
hardening shared with the tutorial (http.py: errors, JSON bodies, the body limit, the browser guard).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from lucidlm.model import GPT
from lucidlm.serve.engine import Engine
from lucidlm.serve.engine_process import EngineProcess
from lucidlm.serve.inspector import add_inspector_routes
from lucidlm.serve.openai import add_openai_routes
from lucidlm.serve.schemas import ServerSettings
from lucidlm.tokenizers import Tokenizer
from lucidlm.web.http import BodyLimit, BrowserGuard, add_error_handlers


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
    add_openai_routes(app, tokenizer, settings, engine)
    add_inspector_routes(app, model, tokenizer, settings)
    return app
