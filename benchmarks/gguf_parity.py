"""GGUF in llama.cpp: how far llama.cpp's logits lie from lucidlm's, for each layout and storage type.

Random models of the test suite's shapes (2 layers, 64 wide, logits of about +-30), exported with
`export_gguf` and run by llama.cpp through llama-cpp-python (the `llamacpp` extra) on the same prompt.

    python benchmarks/gguf_parity.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from common import machine, write_results
from llama_cpp import Llama

from lucidlm.interop.gguf import QUANTIZATIONS, export_gguf
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import BPETokenizer, CharTokenizer

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 4
PROMPT = "To be, or not to be, that is the question"
LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu")
LAYOUTS = {
    "llama (gqa, untied), char": (dict(LLAMA, n_kv_head=2, tie_embeddings=False), "char"),
    "llama (bias, tied), bpe gpt4": (dict(LLAMA, bias=True), "gpt4"),
    "qwen3 (qk_norm, gqa), bpe gpt2": (dict(LLAMA, qk_norm=True, n_kv_head=2), "gpt2"),
    "gpt2 (bias, tied), char": (dict(positions="learned", norm="layernorm", mlp="gelu", bias=True), "char"),
}


def model_and_tokenizer(switches: dict, kind: str):
    tokenizer = CharTokenizer.train([TEXT]) if kind == "char" else BPETokenizer.train(TEXT, 300, kind, progress=False)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64, **switches))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        model.transformer.wte.weight.mul_(20)
        if not model.config.tie_embeddings:
            model.lm_head.weight.mul_(20)
    return model.eval(), tokenizer


def main() -> None:
    results, rows, work = {"machine": machine(), "layouts": {}}, [], Path(tempfile.mkdtemp())
    for name, (switches, kind) in LAYOUTS.items():
        model, tokenizer = model_and_tokenizer(switches, kind)
        ids = tokenizer.encode(PROMPT)
        with torch.no_grad():
            ours = model(torch.tensor([ids]))[0][0].numpy()
        entry = {"max_abs_logit": float(np.abs(ours).max())}
        for quantize in QUANTIZATIONS:
            path = export_gguf(model, tokenizer, work / f"{quantize}.gguf", quantize, force=True)
            llm = Llama(model_path=str(path), n_ctx=64, logits_all=True, n_threads=2, verbose=False)
            llm.eval(ids)
            theirs = np.array(llm.scores[: len(ids)])
            entry[quantize] = {"max_abs_diff": float(np.abs(theirs - ours).max()), "bytes": path.stat().st_size}
        results["layouts"][name] = entry
        cells = " | ".join(f"{entry[q]['max_abs_diff']:.1e}" for q in QUANTIZATIONS)
        rows.append(f"| {name} | {entry['max_abs_logit']:.1f} | {cells} |")
    table = f"""## GGUF in llama.cpp (`benchmarks/gguf_parity.py`)

The largest difference between llama.cpp's logits and lucidlm's over a {len(PROMPT)}-character prompt, for random
models of 2 layers and width 64 whose logits reach about +-30. The tests hold f32 to 1e-3, f16 to 2e-2 and
q8_0 to 3e-1 (tests/export/test_gguf.py), and check the same token ids and the same 50 greedy tokens.

| layout, tokenizer | max abs logit | f32 | f16 | q8_0 |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}

llama.cpp for these tests is llama-cpp-python 0.3.36 built from its source distribution with
`CMAKE_ARGS="-DGGML_NATIVE=OFF"`: 4 min 21 s on this 2-core machine (pip keeps the wheel, so later installs take
seconds). The 33 GGUF tests take about 11 s."""
    write_results("gguf_parity", results, table)


if __name__ == "__main__":
    main()
