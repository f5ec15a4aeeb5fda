"""A Hub model in lucidlm, beside `transformers`, on GPT-2 small's shape (124M, random weights, float32, CPU).

The directory is written by `transformers.save_pretrained` (with a small byte-level BPE tokenizer, since no
weights or tokenizers are downloaded). Measured in one process: load time, greedy decoding at batch 1 (lucidlm's
KV-cache decoding against `transformers`' `generate`, in alternating rounds, the same tokens checked), the loss
over a token stream, and fine-tuning speed through `lucidlm train --init-from hf:DIR`'s trainer.

    python benchmarks/hub_gpt2.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tokenizers
import torch
import transformers
from common import machine, write_results
from tokenizers import decoders, models, pre_tokenizers, trainers

from lucidlm.decode import SamplingConfig
from lucidlm.evaluate import split_loss
from lucidlm.generate import generate_ids
from lucidlm.load import load_model
from lucidlm.model.onednn import decode_with_onednn
from lucidlm.train.plan import carry_out, plan_run

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer\n" * 400
NEW_TOKENS, ROUNDS = 64, 3


def write_hub_directory(directory: Path) -> None:
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([TEXT], trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>").save_pretrained(
        directory
    )
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def decoding_model(hub: Path, dtype: str):
    """lucidlm's model as `lucidlm generate` decodes with it: loaded, then switched to oneDNN's products."""
    model, _, _ = load_model(f"hf:{hub}", dtype=dtype)
    decode_with_onednn(model)
    return model


def decoding_rates(hub: Path, prompt: list[int], dtype: str) -> dict[str, list[float]]:
    """Greedy tokens/s at batch 1 of both, in alternating rounds, with the weights in `dtype`."""
    ours = decoding_model(hub, dtype)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hub, dtype=getattr(torch, dtype)).eval()
    greedy, rates = SamplingConfig(temperature=0), {"lucidlm": [], "transformers": []}
    for _ in range(ROUNDS):
        our_tokens, seconds = timed(lambda: list(generate_ids(ours, prompt, NEW_TOKENS, greedy)))
        rates["lucidlm"].append(round(NEW_TOKENS / seconds, 1))
        with torch.no_grad():
            out, seconds = timed(
                lambda: theirs.generate(
                    torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
                )
            )
        rates["transformers"].append(round(NEW_TOKENS / seconds, 1))
        assert out[0, len(prompt) :].tolist() == our_tokens, "lucidlm and transformers chose different tokens"
    return rates


def memory_bandwidth() -> float:
    """Bytes per second read by a sum over 1 GB (far more than the caches hold): at batch 1 every decoding step
    reads all the weights once, so this bounds the tokens per second of any decoder. The median of 7 (the shared
    machine's figure moves between runs)."""
    source = torch.randn(256 * 2**20)
    return source.numel() * 4 / statistics.median(timed(source.sum)[1] for _ in range(7))


def share_in_products(model, prompt: list[int]) -> float:
    """The fraction of a decoding run's CPU time spent in matrix products (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        list(generate_ids(model, prompt, 16, SamplingConfig(temperature=0)))
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    products = ("aten::addmm", "aten::mm", "mkldnn::_linear_pointwise")
    return sum(e.self_cpu_time_total for e in events if e.key in products) / total


def main() -> None:
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp())
    hub = work / "gpt2"
    write_hub_directory(hub)
    (ours, tokenizer, _), our_load = timed(lambda: load_model(f"hf:{hub}"))
    _, their_load = timed(lambda: transformers.AutoModelForCausalLM.from_pretrained(hub).eval())
    prompt = tokenizer.prompt_ids("To be, or not to be")
    rates = {dtype: decoding_rates(hub, prompt, dtype) for dtype in ("float32", "bfloat16")}
    bandwidth, products = memory_bandwidth(), share_in_products(decoding_model(hub, "float32"), prompt)
    stream = np.asarray(tokenizer.encode(TEXT), dtype=np.int64)[:4096]
    (_, scored), eval_seconds = timed(lambda: split_loss(ours, stream))
    text = work / "text.txt"
    text.write_text(TEXT * 3)  # both splits longer than the context of 1,024 tokens
    plan = plan_run(
        text,
        work / "ft",
        "gpt2-small",
        overrides=["max_steps=4", "batch_size=1", "grad_accum=1", "eval_interval=100", "eval_batches=1", "device=cpu"],
        init_from=f"hf:{hub}",
    )
    trained = carry_out(plan, progress=False)
    median = {dtype: {who: statistics.median(r) for who, r in by.items()} for dtype, by in rates.items()}
    verdict = "met" if median["float32"]["lucidlm"] >= 1.5 * median["float32"]["transformers"] else "not met"
    weights_bytes = {"float32": 4 * ours.num_params(True), "bfloat16": 2 * ours.num_params(True)}
    bound = {dtype: bandwidth / weights_bytes[dtype] for dtype in rates}
    results = {
        "machine": machine(),
        "parameters": ours.num_params(include_position_embeddings=True),
        "load_s": {"lucidlm": round(our_load, 2), "transformers": round(their_load, 2)},
        "generate_tokens_per_s": rates,
        "generate_ratio": {dtype: round(m["lucidlm"] / m["transformers"], 2) for dtype, m in median.items()},
        "memory_read_gb_s": round(bandwidth / 1e9, 1),
        "decode_time_in_matrix_products": round(products, 3),
        "bandwidth_bound_tokens_per_s": {dtype: round(b, 1) for dtype, b in bound.items()},
        "eval_tokens_per_s": round(scored / eval_seconds),
        "finetune_tokens_per_s": round(trained.tokens_per_second),
    }
    decode_rows = "\n".join(
        f"| greedy decoding, batch 1, {NEW_TOKENS} tokens, {dtype} weights | {m['lucidlm']:.1f} tokens/s | "
        f"{m['transformers']:.1f} tokens/s |"
        for dtype, m in median.items()
    )
    table = f"""## A Hub model: GPT-2 small's shape (`benchmarks/hub_gpt2.py`)

GPT-2 124M (random weights, float32) written by `transformers.save_pretrained`, run as `hf:DIR` on the CPU
({results["machine"]["threads"]} threads), medians of {ROUNDS} alternating rounds; the same greedy tokens as
`transformers` in every round.

| | lucidlm | transformers |
|---|---:|---:|
| load | {our_load:.2f} s | {their_load:.2f} s |
{decode_rows}

Decoding is {results["generate_ratio"]["float32"]}x `transformers`' `generate` in float32 and
{results["generate_ratio"]["bfloat16"]}x in bfloat16 (target 1.5x in float32: {verdict}). At batch 1 each token
reads every weight once, {weights_bytes["float32"] / 1e6:,.0f} MB in float32, and this machine reads memory at
{bandwidth / 1e9:.1f} GB/s (a sum over 1 GB), which bounds any float32 decoder here at {bound["float32"]:.0f}
tokens/s; lucidlm reaches {median["float32"]["lucidlm"] / bound["float32"]:.0%} of that, with {products:.0%} of
its decoding time in the matrix-vector products (torch.profiler). What makes the difference is the kernel
(model/onednn.py): both models store (out, in) weights, which the product PyTorch calls (MKL's matrix-vector
kernel) reads at about 13 GB/s here, and which `lucidlm generate` hands to oneDNN's inner product instead
(18-27 GB/s). In
bfloat16 (`--dtype bfloat16`) the bound is {bound["bfloat16"]:.0f} tokens/s, and lucidlm decodes at
{median["bfloat16"]["lucidlm"] / median["float32"]["transformers"]:.1f}x `transformers` in float32.
The loss over {scored:,} tokens (every token once, up to 1,024 of context) ran at
{results["eval_tokens_per_s"]:,} tokens/s; fine-tuning (`train --init-from hf:DIR`, batch 1 x 1,024 tokens,
AdamW, float32) at {results["finetune_tokens_per_s"]:,} tokens/s."""
    write_results("hub_gpt2", results, table)


if __name__ == "__main__":
    main()
