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

from lucidlm.evaluate import split_loss
from lucidlm.generate import SamplingConfig, generate_ids
from lucidlm.train import load_model
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


def main() -> None:
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp())
    hub = work / "gpt2"
    write_hub_directory(hub)
    (ours, tokenizer, _), our_load = timed(lambda: load_model(f"hf:{hub}"))
    theirs, their_load = timed(lambda: transformers.AutoModelForCausalLM.from_pretrained(hub).eval())
    prompt = tokenizer.prompt_ids("To be, or not to be")
    greedy = SamplingConfig(temperature=0)
    our_rates, their_rates = [], []
    for _ in range(ROUNDS):
        our_tokens, seconds = timed(lambda: list(generate_ids(ours, prompt, NEW_TOKENS, greedy)))
        our_rates.append(NEW_TOKENS / seconds)
        with torch.no_grad():
            out, seconds = timed(
                lambda: theirs.generate(
                    torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
                )
            )
        their_rates.append(NEW_TOKENS / seconds)
        assert out[0, len(prompt) :].tolist() == our_tokens, "lucidlm and transformers chose different tokens"
    stream = np.asarray(tokenizer.encode(TEXT), dtype=np.int64)[:4096]
    (_, scored), eval_seconds = timed(lambda: split_loss(ours, stream))
    text = work / "text.txt"
    text.write_text(TEXT)
    plan = plan_run(
        text,
        work / "ft",
        "gpt2-small",
        overrides=["max_steps=4", "batch_size=1", "grad_accum=1", "eval_interval=100", "device=cpu"],
        init_from=f"hf:{hub}",
    )
    trained = carry_out(plan, progress=False)
    ours_rate, theirs_rate = statistics.median(our_rates), statistics.median(their_rates)
    results = {
        "machine": machine(),
        "parameters": ours.num_params(include_position_embeddings=True),
        "load_s": {"lucidlm": round(our_load, 2), "transformers": round(their_load, 2)},
        "generate_tokens_per_s": {
            "lucidlm": [round(r, 1) for r in our_rates],
            "transformers": [round(r, 1) for r in their_rates],
        },
        "generate_ratio": round(ours_rate / theirs_rate, 2),
        "eval_tokens_per_s": round(scored / eval_seconds),
        "finetune_tokens_per_s": round(trained.tokens_per_second),
    }
    table = f"""## A Hub model: GPT-2 small's shape (`benchmarks/hub_gpt2.py`)

GPT-2 124M (random weights, float32) written by `transformers.save_pretrained`, run as `hf:DIR` on the CPU
({results["machine"]["threads"]} threads), medians of {ROUNDS} alternating rounds; the same greedy tokens as
`transformers` in every round.

| | lucidlm | transformers |
|---|---:|---:|
| load | {our_load:.2f} s | {their_load:.2f} s |
| greedy decoding, batch 1, {NEW_TOKENS} tokens | {ours_rate:.1f} tokens/s | {theirs_rate:.1f} tokens/s |

Decoding is **{results["generate_ratio"]}x** `transformers`' `generate` (target 1.5x). The loss over
{scored:,} tokens (every token once, up to 1,024 of context) ran at {results["eval_tokens_per_s"]:,} tokens/s;
fine-tuning (`train --init-from hf:DIR`, batch 1 x 1,024 tokens, AdamW) at
{results["finetune_tokens_per_s"]:,} tokens/s."""
    write_results("hub_gpt2", results, table)


if __name__ == "__main__":
    main()
