"""The demo model in the browser: `export --format web`'s page in headless Chromium (gpt.js, batch 1).

The model is `make demo`'s run (runs/demo) when it is there, else the `shakespeare-char` preset's shape with
random weights (the speed is the same). Measured: the page's weight, the time from opening the page to the
first generated token (loading the weights included), and decoding tokens/s, sampled at temperature 0.8,
timed inside the page (medians of 3).

    python benchmarks/web_decode.py
"""

from __future__ import annotations

import statistics
import time

import torch
from common import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    ROOT,
    WORK,
    machine,
    machine_line,
    serving,
    tiny_shakespeare_data,
    write_results,
)

from lucidlm.interop.web import export_web
from lucidlm.load import load_model
from lucidlm.model import GPT, GPTConfig
from lucidlm.run_config import PRESETS
from lucidlm.tokenizers import load_tokenizer

NEW_TOKENS, ROUNDS = 500, 3


def demo_model():
    run = ROOT / "runs" / "demo"
    if (run / "latest.json").exists():
        model, tokenizer, _ = load_model(run)
        return model, tokenizer, "make demo's trained run"
    tokenizer = load_tokenizer(tiny_shakespeare_data() / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**PRESETS["shakespeare-char"]["model"], "vocab_size": tokenizer.vocab_size}))
    return model.eval(), tokenizer, "the shakespeare-char shape, random weights"


def main() -> None:
    from playwright.sync_api import sync_playwright

    model, tokenizer, which = demo_model()
    site = export_web(model, tokenizer, WORK / "web-demo", force=(WORK / "web-demo").exists())
    weight = {p.name: p.stat().st_size for p in site.iterdir()}
    first_token, rates = [], []
    with serving(site) as origin, sync_playwright() as playwright:
        url = f"{origin}/index.html"
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for _ in range(ROUNDS):
            page = browser.new_page()
            started = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            page.evaluate("window.lucidlm.generate('ROMEO:', {maxNewTokens: 1, temperature: 0.8, seed: 1})")
            first_token.append(time.perf_counter() - started)
            milliseconds = page.evaluate(
                f"""() => {{ const start = performance.now();
                    window.lucidlm.generate('ROMEO:', {{maxNewTokens: {NEW_TOKENS}, temperature: 0.8, seed: 1}});
                    return performance.now() - start; }}"""
            )
            rates.append(round(NEW_TOKENS / (milliseconds / 1000), 1))
            page.close()
        version = browser.version
        browser.close()
    rate, ttft = statistics.median(rates), statistics.median(first_token)
    results = {
        "machine": machine(),
        "chromium": version,
        "model": which,
        "parameters": model.num_params(include_position_embeddings=True),
        "config": {k: getattr(model.config, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")},
        "page_bytes": weight,
        "first_token_s": [round(s, 3) for s in first_token],
        "decode_tokens_per_s": rates,
    }
    c = model.config
    table = f"""## The demo model in the browser (`benchmarks/web_decode.py`)

`lucidlm export --format web` of {which} ({results["parameters"]:,} parameters: {c.n_layer} layers, width
{c.n_embd}, block {c.block_size}), served locally and run by gpt.js in headless Chromium {version} on this
machine; medians of {ROUNDS} page loads. {machine_line()}

| | |
|---|---:|
| page weight | {sum(weight.values()) / 1e6:.2f} MB ({weight["weights.bin"] / 1e6:.2f} MB of weights) |
| opening the page to the first token | {ttft * 1000:.0f} ms |
| decoding at batch 1 ({NEW_TOKENS} tokens, temperature 0.8) | {rate:,.0f} tokens/s (target 200) |"""
    write_results("web_decode", results, table)


if __name__ == "__main__":
    main()
