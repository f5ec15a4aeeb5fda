"""The model inspector of `lucidlm serve`: the model's card, every head's attention weights for a text, the
logit lens and what each head does (lens.py), and the forward pass at one position (explain.py), with the pages
that draw them (/ and /explain/)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from lucidlm.explain import explain
from lucidlm.lens import ablation, head_scores, logit_lens
from lucidlm.model import GPT
from lucidlm.serve.schemas import ServerSettings, encode_text
from lucidlm.tokenizers import Tokenizer
from lucidlm.web import MODEL_PAGE, MODEL_SCRIPTS, STATIC
from lucidlm.web.http import APIError, parse_body

EXPLAIN_TOKENS = 256  # the explainer's answer holds a (T, T) heatmap: the text's last 256 tokens at most
LENS_TOKENS = 64  # the lens's grid has a column a token: the text's last 64 at most


class AttentionBody(BaseModel):
    text: str


class LensBody(BaseModel):
    text: str
    top: int = 3  # the tokens each cell of the logit lens lists


class ExplainBody(BaseModel):
    text: str | None = None  # the text, or
    ids: list[int] | None = None  # its token ids (as an earlier answer gave them)
    position: int = -1  # counted from the end when negative, as in Python
    layer: int = 0  # the head whose weights at every position the heatmap shows
    head: int = 0


def add_inspector_routes(app: FastAPI, model: GPT, tokenizer: Tokenizer, settings: ServerSettings) -> None:
    explain_tokens = min(EXPLAIN_TOKENS, model.config.block_size)  # the text's last tokens that the model reads

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
        tokens = encode_text(tokenizer, body.text, "text")[-model.config.block_size :]
        weights = await asyncio.to_thread(attention_weights, model, tokens)
        return {
            "tokens": [tokenizer.decode([t]) for t in tokens],
            "weights": [[[[round(w, 4) for w in row] for row in head] for head in layer] for layer in weights],
        }

    @app.post("/api/lens")
    async def lens(request: Request):
        body: LensBody = await parse_body(request, LensBody)
        if not body.text:
            raise APIError(400, "text must not be empty", "text")
        if not 1 <= body.top <= 10:
            raise APIError(400, f"top must lie in 1..10, not {body.top}", "top")
        ids = encode_text(tokenizer, body.text, "text")[-min(LENS_TOKENS, model.config.block_size) :]
        view = await asyncio.to_thread(logit_lens, model, ids, body.top)
        decoded = [[[tokenizer.decode([t]) for t in cell] for cell in row] for row in view["top_tokens"]]
        return {**view, "tokens": [tokenizer.decode([t]) for t in ids], "top_tokens": decoded}

    @app.post("/api/heads")
    async def heads(request: Request):
        body: AttentionBody = await parse_body(request, AttentionBody)
        ids = encode_text(tokenizer, body.text, "text")[-model.config.block_size :]
        if len(ids) < 2:
            raise APIError(400, "give a text of at least 2 tokens: the ablation scores the predictions in it", "text")
        scores = await asyncio.to_thread(head_scores, model)
        removed = await asyncio.to_thread(ablation, model, ids)
        return {**scores, "ablation": removed}

    @app.post("/api/explain")
    async def explain_position(request: Request):
        body: ExplainBody = await parse_body(request, ExplainBody)
        if (body.text is None) == (body.ids is None):
            raise APIError(400, "give the text or its ids, one of the two", "text")
        if body.ids is not None and not all(0 <= i < tokenizer.vocab_size for i in body.ids):
            raise APIError(400, f"ids must lie in [0, {tokenizer.vocab_size})", "ids")
        ids = (encode_text(tokenizer, body.text, "text") if body.ids is None else body.ids)[-explain_tokens:]
        position = body.position + len(ids) if body.position < 0 else body.position
        if not ids or not 0 <= position < len(ids):
            raise APIError(400, f"position {body.position} is outside the text's {len(ids)} tokens", "position")
        try:
            view = await asyncio.to_thread(explain, model, ids, position, body.layer, body.head)
        except ValueError as exc:  # the layer or head (the ids fit: they were cut to the window)
            raise APIError(400, str(exc), "layer") from None
        return {**view, "texts": [tokenizer.decode([i]) for i in ids]}

    @app.get("/")
    async def inspector():
        return FileResponse(STATIC / "inspector.html")

    @app.get("/explain/")
    async def explainer():
        return FileResponse(MODEL_PAGE)

    @app.get("/explain/model.json")
    async def explainer_model():
        parameters = model.num_params(include_position_embeddings=True)
        config = asdict(model.config)
        return {"source": "api", "model_id": settings.model_id, "parameters": parameters, "config": config}

    @app.get("/explain/{name}")
    async def explainer_file(name: str):
        if name == "style.css":
            return FileResponse(STATIC / name, media_type="text/css")
        if name not in MODEL_SCRIPTS:
            raise APIError(404, f"no such file: /explain/{name}")
        return FileResponse(STATIC / name, media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


@torch.inference_mode()
def attention_weights(model: GPT, tokens: list[int]) -> list:
    """(layers, heads, T, T) attention weights for one sequence, from the hook points `attn.hook_pattern`."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.config.n_layer)]
    _, cache = model.run_with_cache(torch.tensor([tokens], device=model.lm_head.weight.device), names)
    return torch.stack([cache[name][0] for name in names]).float().tolist()
