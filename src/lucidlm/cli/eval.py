"""`lucidlm eval`: a model's mean loss over a whole split, or its replies scored on tasks."""

from __future__ import annotations

import argparse
import json

from lucidlm.cli.common import (
    add_checkpoint_choice,
    add_device_argument,
    add_sampling_arguments,
    note_unknown_words,
    sampling_generator,
)
from lucidlm.errors import ConfigError
from lucidlm.outputs import FORCE, FORCE_HELP, PAIRS_FILE, check_file_target, written_file

NAME = "eval"
HELP = "a model's mean loss over a whole split, or its replies scored on tasks"
GUIDE = "docs/guides/chat-and-tuning.md"
EXAMPLES = """examples:
  lucidlm eval --checkpoint runs/a --data data/shakespeare-char
  lucidlm eval --checkpoint runs/a --data data/shakespeare-char --split train --json
  lucidlm eval --checkpoint runs/sft --tasks heldout.jsonl
      (one {"messages": [...], "answer": "..."} a line, optionally "task" and "choices": exact-match table)
  lucidlm eval --checkpoint runs/tools --tasks heldout.jsonl --tools calculator
  lucidlm eval --checkpoint runs/sft --tasks questions.jsonl --pairs pairs.jsonl   (wrong replies as DPO pairs)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    scored = parser.add_mutually_exclusive_group(required=True)
    scored.add_argument("--data", help="a prepared DATA_DIR, or a plain text file (all scored)")
    scored.add_argument("--tasks", metavar="FILE.jsonl", help="conversations with their answers: exact-match scores")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="--tasks: the longest reply (default 64)")
    parser.add_argument(
        "--tools", action="append", default=[], metavar="NAME", help="--tasks: offer a built-in tool (calculator)"
    )
    parser.add_argument(
        "--pairs",
        metavar="FILE.jsonl",
        help="--tasks: write each wrong reply as a preference pair (the answer chosen, the reply rejected) for DPO",
    )
    parser.add_argument(FORCE, action="store_true", help="--pairs: " + FORCE_HELP)
    add_sampling_arguments(parser, temperature=0.0, seed=0, only="--tasks: ")
    parser.add_argument("--split", choices=["val", "train"], default="val")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_device_argument(parser)
    add_checkpoint_choice(parser)


def run(args: argparse.Namespace) -> None:
    from lucidlm.chat.tools import check_tool_names
    from lucidlm.device import pick_device
    from lucidlm.evaluate import data_to_score, read_task_records, score
    from lucidlm.load import ModelSource, load_model
    from lucidlm.runs import checkpoint_step, find_checkpoint

    source = ModelSource.parse(args.checkpoint, args.which)
    if args.tools and not args.tasks:
        raise ConfigError("--tools is for --tasks: the tools a model may call while it answers")
    if args.pairs and not args.tasks:
        raise ConfigError("--pairs is for --tasks: the pairs are made of the replies to the tasks")
    if args.pairs:
        check_file_target(args.pairs, PAIRS_FILE, args.force, "--pairs")
    check_tool_names(args.tools)
    records = read_task_records(args.tasks) if args.tasks else None  # before the model loads: fails fast
    model, tokenizer, _ = load_model(source, device=pick_device(args.device), dtype=args.dtype)
    if records is not None:
        return print_task_scores(model, tokenizer, records, args)
    tokens, data, unknown = data_to_score(tokenizer, args.data, args.split)
    note_unknown_words(unknown)
    step = None if source.hub else checkpoint_step(find_checkpoint(source.path, source.which))
    result = {**score(model, tokens, tokenizer), "data": data, "checkpoint_step": step}
    if args.json:
        print(json.dumps(result))
    else:
        bpb = "" if result["bits_per_byte"] is None else f", {result['bits_per_byte']:.4f} bits/byte"
        print(
            f"{data}: loss {result['loss']:.4f} nats/token (perplexity {result['perplexity']:.2f}{bpb}) over "
            f"{result['tokens']:,} "
            + (f"tokens, checkpoint at step {step}" if step is not None else f"tokens, {args.checkpoint}")
        )


def print_task_scores(model, tokenizer, records, args: argparse.Namespace) -> None:
    from lucidlm.decode import SamplingConfig
    from lucidlm.evaluate import preference_pairs, score_tasks

    if args.max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be at least 1")
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    generator = sampling_generator(model.lm_head.weight.device, args.seed)
    progress = False if args.json else None
    result = score_tasks(model, tokenizer, records, args.max_new_tokens, progress, sampling, generator, args.tools)
    if args.pairs:
        pairs = preference_pairs(records, result["replies"], f"lucidlm eval {args.checkpoint}")
        with written_file(args.pairs, PAIRS_FILE, args.force, "--pairs") as tmp:
            tmp.write_text("".join(json.dumps(pair) + "\n" for pair in pairs), encoding="utf-8")
        print(
            f"wrote {args.pairs}: {len(pairs):,} preference pairs, one for each wrong reply (train with objective=dpo)"
        )
    if args.json:
        print(json.dumps({"tasks": result["tasks"], "all": result["all"], "checkpoint": args.checkpoint}))
        return
    width = max(len("task"), *(len(task) for task in result["tasks"]))
    print(f"{'task':<{width}}  records  exact match  normalised match")
    for task, row in [*result["tasks"].items(), ("all", result["all"])]:
        print(f"{task:<{width}}  {row['records']:7d}  {row['exact_match']:11.1%}  {row['normalised_match']:16.1%}")
