"""`lucidlm train`: train a GPT."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from lucidlm.cli.common import (
    add_device_argument,
)
from lucidlm.outputs import FORCE, FORCE_HELP

NAME = "train"
HELP = "train a GPT"
GUIDE = "docs/guides/training.md"
EXAMPLES = """examples:
  lucidlm train --data data/shakespeare-char --out runs/a --preset shakespeare-char --time-budget 120
  lucidlm train --data my.txt --out runs/b                 (a text file is prepared with the char tokenizer)
  lucidlm train --data data/shakespeare-char --out runs/a --resume --max-steps 4000
  lucidlm train --data data/mine --out runs/c --set n_layer=6 --set lr=3e-4
  lucidlm train --data my.txt --out runs/d --backend numpy --preset nanogpt-baby   (the NumPy GPT)
  lucidlm train --init-from hf:models/gpt2 --data my.txt --out runs/e --preset gpt2-small   (fine-tune GPT-2)
  lucidlm train --init-from runs/sft --data data/pairs --out runs/dpo --set objective=dpo --set dpo_beta=0.1
  lucidlm train --init-from runs/sft --data data/tasks --out runs/rl --set objective=grpo --set reward=number
      (--set reward=my_module:my_function scores a reply with your own Python function)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lucidlm.run_config import PRESETS  # no PyTorch: the model's settings, not the model

    parser.add_argument("--data", required=True, help="a prepared DATA_DIR, or a plain text file")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="where checkpoints and metrics go")
    parser.add_argument("--preset", help=f"one of: {', '.join(PRESETS)} (default shakespeare-char)")
    parser.add_argument("--config", metavar="FILE.toml", help="settings in [model] and [train] tables")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this much training time")
    parser.add_argument(
        "--init-from",
        metavar="hf:DIR|RUN_DIR",
        help="start from a trained model: a Hugging Face GPT-2/Llama/Qwen3 directory, or a run",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument(FORCE, action="store_true", help=FORCE_HELP + ": start RUN_DIR's run afresh")
    add_device_argument(parser, default=None)
    parser.add_argument(
        "--compile", action="store_true", help="compile the blocks with torch.compile (compile=auto does for long runs)"
    )
    parser.add_argument(
        "--backend",
        "--engine",  # its former name
        dest="backend",
        choices=["torch", "numpy"],
        help="what computes a step: torch (default) or numpy, lucidlm.scratch's hand-written backward pass "
        "(--engine is its former name)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lucidlm.train.plan import carry_out, plan_run

    overrides = list(args.set)
    for flag, key in (
        (args.max_steps, "max_steps"),
        (args.time_budget, "time_budget"),
        (args.device, "device"),
        (args.backend, "backend"),
    ):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    if args.compile:
        overrides.append("compile=true")
    plan = plan_run(args.data, args.out, args.preset, args.config, overrides, args.init_from, args.resume, args.force)
    if plan.nothing_to_do:
        print(plan.nothing_to_do)
        return 0
    result = carry_out(plan, progress=False if args.no_progress else None)
    if not result.is_main:
        return 128 + result.interrupted if result.interrupted else 0
    rate = f"{result.tokens_per_second:,.0f} tokens/s"
    if result.compile_seconds:
        rate += f", after {result.compile_seconds:.0f}s compiling"
    print(
        f"trained {result.step} steps in {result.elapsed:.0f}s ({rate}); "
        f"val loss {result.val_loss:.4f}, best {result.best_val_loss or float('nan'):.4f}"
        if result.val_loss is not None
        else f"trained {result.step} steps in {result.elapsed:.0f}s ({rate})"
    )
    data, out = shlex.quote(args.data), shlex.quote(args.out)
    if result.interrupted:
        print(
            f"interrupted: checkpoint saved at step {result.step}. Resume with:\n"
            f"  lucidlm train --data {data} --out {out} --resume"
        )
        return 128 + result.interrupted
    from lucidlm.data.loader import opening_words
    from lucidlm.tokenizers import load_tokenizer

    prompt = shlex.quote(opening_words(load_tokenizer(Path(args.out) / "tokenizer.json"), result.data_dir))
    print(
        f"checkpoints, metrics.jsonl and loss.png are in {args.out}. Next:\n"
        f"  lucidlm generate --checkpoint {out} --prompt {prompt} --max-new-tokens 300\n"
        f"  lucidlm eval --checkpoint {out} --data {shlex.quote(str(result.data_dir))}"
    )
    return 0
