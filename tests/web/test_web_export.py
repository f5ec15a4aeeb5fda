"""`lucidlm export --format web`: the model in plain JavaScript, held to PyTorch in real Chromium."""

import functools
import json
from collections.abc import Mapping

import pytest
import torch

from lucidlm.decode import SamplingConfig
from lucidlm.errors import ConfigError
from lucidlm.explain import explain
from lucidlm.generate import generate_ids
from lucidlm.interop import web as web_model
from lucidlm.interop.web import export_web
from lucidlm.lens import ablation, attention_scores, logit_lens, repeated_tokens
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer

from ..conftest import ARTIFACTS, SAMPLE_TEXT, require_chromium
from .conftest import serving

require_chromium()

ADVERSARIAL = [
    "First Citizen:\nYou are all resolved",
    "   leading spaces and trailing   ",
    "café naïve 😀 12345678 don't WE'LL they've",
    "\n\n\t mixed \u00a0 whitespace \u2003 here",
    "Speak, speak.",
]
TEXT = SAMPLE_TEXT + "\n".join(ADVERSARIAL) + "\r\nwindows lines\n"
# (switches, tokenizer): each switch of the model and each tokenizer kind at least once
VARIANTS = {
    "gpt2-char": (dict(positions="learned", norm="layernorm", mlp="gelu", bias=True, tie_embeddings=True), "char"),
    "llama-bpe4": (
        dict(positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1, qk_norm=True, tie_embeddings=False),
        "bpe-gpt4",
    ),
    "sinusoid-word": (dict(positions="sinusoidal", norm="layernorm", mlp="relu2", bias=False), "word"),
    "rope-relu-bpe2": (dict(positions="rope", norm="layernorm", mlp="relu", head_dim=12, bias=True), "bpe-gpt2"),
}


def make_tokenizer(kind: str):
    if kind == "char":
        return CharTokenizer.train([TEXT])
    if kind == "word":
        return WordTokenizer.train([TEXT])
    return BPETokenizer.train(TEXT, vocab_size=400, pattern=kind.split("-")[1], progress=False)


def make_model(switches: dict, vocab_size: int) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=vocab_size, block_size=24, n_layer=2, n_head=4, n_embd=32, **switches)
    model = GPT(config).eval()
    with torch.no_grad():  # norm gains and biases away from 1 and 0, so that a mistake in them shows
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request, tmp_path_factory, browser):
    """A model and tokenizer of one variant, exported, served over HTTP, and opened in Chromium."""
    switches, kind = VARIANTS[request.param]
    tokenizer = make_tokenizer(kind)
    model = make_model(switches, tokenizer.vocab_size)
    site = export_web(model, tokenizer, tmp_path_factory.mktemp("web") / "site")
    with serving(site) as origin:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        requested, errors = [], []

        def only_the_pages_origin(route):
            requested.append(route.request.url)
            return route.continue_() if route.request.url.startswith(origin + "/") else route.abort()

        page.route("**/*", only_the_pages_origin)  # offline: anything else would fail, and is listed
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(origin + "/index.html")
        page.wait_for_selector("body[data-ready]")
        assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#model-name")
        yield request.param, model, tokenizer, page, origin, requested
        assert errors == []
        page.close()


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0][0]  # (T, V)


def test_the_page_encodes_as_python_does(exported):
    _, _, tokenizer, page, _, _ = exported
    for text in ADVERSARIAL:
        ids = tokenizer.encode(text)
        assert page.evaluate("(text) => window.lucidlm.encode(text)", text) == ids, text
        assert page.evaluate("(ids) => window.lucidlm.decode(ids)", ids) == tokenizer.decode(ids)


def test_the_page_logits_equal_pytorchs(exported):
    _, model, tokenizer, page, _, _ = exported
    generator = torch.Generator().manual_seed(1)
    for length in (1, 5, 24):
        ids = torch.randint(0, tokenizer.vocab_size, (length,), generator=generator).tolist()
        ours = torch.tensor(page.evaluate("(ids) => Array.from(window.lucidlm.logits(ids))", ids))
        torch.testing.assert_close(ours, torch_logits(model, ids)[-1], atol=1e-4, rtol=0)


def test_cached_and_uncached_logits_are_equal(exported):
    _, _, tokenizer, page, _, _ = exported
    ids = [i % tokenizer.vocab_size for i in range(3, 3 + 7 * 20, 7)]  # 20 tokens
    difference = page.evaluate(
        """(ids) => {
            const { model, KVCache } = window.lucidlm, V = model.config.vocab_size;
            const whole = model.forward(ids);
            const cache = new KVCache(model.config);
            model.forward(ids.slice(0, 8), cache);
            let worst = 0;
            for (let t = 8; t < ids.length; t++) {
                const step = model.forward([ids[t]], cache);
                for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(step[v] - whole[t * V + v]));
            }
            return worst;
        }""",
        ids,
    )
    assert difference < 1e-5


def test_greedy_generation_equals_lucidlms_past_the_context(exported):
    _, model, tokenizer, page, _, _ = exported
    prompt = "First Citizen:"
    expected = list(generate_ids(model, tokenizer.encode(prompt), 40, SamplingConfig(temperature=0)))  # > 24
    got = page.evaluate("(p) => window.lucidlm.generate(p, {maxNewTokens: 40, temperature: 0})", prompt)
    assert got["ids"] == expected and got["text"] == tokenizer.decode(expected)
    seeded = "(p) => window.lucidlm.generate(p, {maxNewTokens: 20, temperature: 1, topK: 5, topP: 0.9, seed: 7})"
    assert page.evaluate(seeded, prompt) == page.evaluate(seeded, prompt)  # a seed repeats in the page


def test_the_explainers_numbers_are_the_models(exported):
    """One forward pass's intermediates against PyTorch's: the attention weights of every head (the explicit
    attention path), the MLP's activations (the input of its output projection) and the final logits."""
    _, model, tokenizer, page, _, _ = exported
    ids = tokenizer.encode("First Citizen:\nBefore we")[:20]
    trace = page.evaluate(
        """(ids) => { const t = window.lucidlm.trace(ids), all = (a) => Array.from(a);
            return { weights: t.layers.map((l) => all(l.weights)), activations: t.layers.map((l) => all(l.activations)),
                     logits: all(t.logits), embeddings: all(t.token_embeddings) }; }""",
        ids,
    )
    activations = []
    hooks = [
        block.mlp.c_proj.register_forward_hook(lambda _m, inputs, _o: activations.append(inputs[0][0]))
        for block in model.transformer.h
    ]
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.config.n_layer)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(torch.tensor([ids]), names)
    weights = [cache[name] for name in names]
    for hook in hooks:
        hook.remove()
    T = len(ids)
    close = functools.partial(torch.testing.assert_close, rtol=0)
    for layer in range(model.config.n_layer):
        close(torch.tensor(trace["weights"][layer]).view(-1, T, T), weights[layer][0], atol=1e-5)
        close(torch.tensor(trace["activations"][layer]).view(T, -1), activations[layer], atol=1e-4)
    close(torch.tensor(trace["logits"]).view(T, -1), logits[0], atol=1e-4)
    close(torch.tensor(trace["embeddings"]).view(T, -1), model.transformer.wte.weight[ids], atol=0)


def assert_numbers_close(ours, reference, where="view"):
    """The same nesting, None where the reference has None (a masked score), numbers within 1e-4."""
    if isinstance(reference, Mapping):  # a dict, or a lens result (which reads as one)
        assert sorted(ours) == sorted(reference), where
        for key in reference:
            assert_numbers_close(ours[key], reference[key], f"{where}.{key}")
    elif isinstance(reference, list):
        assert len(ours) == len(reference), where
        for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
            assert_numbers_close(a, b, f"{where}[{i}]")
    elif isinstance(reference, float):
        assert abs(ours - reference) <= 1e-4, (where, ours, reference)
    else:
        assert ours == reference, where


def test_the_explainers_view_of_a_position_equals_explain_py(exported):
    """The page's own numbers for one position (gpt.js) and the server's (explain.py, PyTorch) are the same."""
    _, model, tokenizer, page, _, _ = exported
    ids = tokenizer.encode("First Citizen:\nBefore we proceed")[:20]
    for position, layer, head in ((0, 0, 0), (len(ids) - 1, 1, 3), (5, 1, 1)):
        ours = page.evaluate("([ids, p, l, h]) => window.lucidlm.view(ids, p, l, h)", [ids, position, layer, head])
        reference = {**explain(model, ids, position, layer, head), "texts": [tokenizer.decode([i]) for i in ids]}
        assert_numbers_close(ours, reference)


def test_the_pages_lens_and_heads_equal_lens_py(exported):
    """The page's logit lens, head scores and ablation (gpt.js, with its hook points) are lens.py's numbers, and
    its lens view draws them."""
    _, model, tokenizer, page, _, _ = exported
    ids = tokenizer.encode("First Citizen:\nBefore we proceed")[:20]
    ours = page.evaluate("([ids]) => window.lucidlm.lens(ids, 3)", [ids])
    reference = logit_lens(model, ids, 3)
    assert ours["layers"] == reference["layers"] and ours["tokens"] == [tokenizer.decode([i]) for i in ids]
    assert_numbers_close(ours["kl_to_output"], reference["kl_to_output"])
    assert_numbers_close(ours["top_probabilities"], reference["top_probabilities"])
    for layer, row in enumerate(reference["top_tokens"]):
        for position, top in enumerate(row):
            probabilities = reference["top_probabilities"][layer][position]
            if probabilities[0] - probabilities[1] > 1e-4:  # a clear favourite: the same token on both sides
                assert ours["top_tokens"][layer][position][0] == tokenizer.decode([top[0]]), (layer, position)
    rows = repeated_tokens(model.config.vocab_size, 20, [10, 10], torch.Generator().manual_seed(0)).tolist()
    scores = page.evaluate("([rows]) => window.lucidlm.headScores(rows, 10)", [rows])
    assert_numbers_close(scores, attention_scores(model, rows, 10))
    for kind in ("zero", "mean"):
        removed = page.evaluate("([ids, kind]) => window.lucidlm.ablation(ids, kind)", [ids, kind])
        assert_numbers_close(removed, ablation(model, ids, kind))
    page.fill("#prompt", "First Citizen:")
    page.click("#refresh-lens")
    page.wait_for_function("document.getElementById('lens').dataset.drawn === '3'")
    page.click("#refresh-heads")
    page.wait_for_function("document.getElementById('ablation').dataset.drawn === '2'")
    assert page.locator("#induction tbody tr").count() == 2 and page.locator("#lens tbody tr").count() == 3


def test_the_page_works_offline_and_draws_the_forward_pass(exported):
    name, model, _, page, origin, requested = exported
    assert requested and all(url.startswith(origin) for url in requested), requested
    page.fill("#prompt", "First Citizen:")
    page.click("#generate")
    page.wait_for_selector("#steps .step canvas")
    titles = page.locator("#steps h3").all_inner_texts()
    assert "Scores, before the mask and softmax" in titles and "The next token's distribution" in titles
    page.locator("#tokens .token").nth(3).click()
    page.wait_for_selector("#steps h3:has-text('Token 3:')")
    shown = page.evaluate("window.lucidlm.shown()")
    assert shown["position"] == 3
    logits = torch_logits(model, shown["ids"])[3]
    for temperature in (0.8, 0.05):  # the slider reshapes the distribution as it moves
        page.locator("#temperature").fill(str(temperature))
        top = torch.softmax((logits - logits.max()) / temperature, -1).max().item()
        assert page.locator("#distribution .bar-row span").first.inner_text() == f"{top:.3f}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"web-export-{name}.png"), full_page=True)


def test_what_the_page_cannot_run_is_refused_with_the_reason(tmp_path, monkeypatch):
    tokenizer = make_tokenizer("char")
    model = make_model({}, tokenizer.vocab_size)
    monkeypatch.setattr(web_model, "MAX_WEIGHT_BYTES", 1000)
    with pytest.raises(ConfigError, match=r"the model's weights are 0 MB in float32; a web page takes at most 0 MB"):
        export_web(model, tokenizer, tmp_path / "big")
    assert not (tmp_path / "big").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "index.html").write_text("my page")
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="is not empty and is not a web export lucidlm wrote"):
        export_web(model, tokenizer, tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "index.html").read_text() == "my page"
    manifest = json.loads((export_web(model, tokenizer, tmp_path / "ok") / "model.json").read_text())
    assert manifest["exported_by"] == "lucidlm" and manifest["tokenizer"]["kind"] == "char"
