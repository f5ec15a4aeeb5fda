"""`lucidlm generate`: sample text from a trained model, streamed as it is produced."""

from __future__ import annotations

import argparse
import sys
import time

from lucidlm.cli.common import (
    add_checkpoint_choice,
    add_device_argument,
    add_sampling_arguments,
    note_unknown_words,
    sampling_generator,
)
from lucidlm.errors import ConfigError

NAME = "generate"
HELP = "sample text from a trained model, streamed as it is produced"
GUIDE = "docs/guides/sampling-and-serving.md"
EXAMPLES = """examples:
  lucidlm generate --checkpoint runs/a --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 \
      --top-k 50 --top-p 0.95 --seed 1 --num-samples 2
  lucidlm generate --checkpoint hf:models/gpt2 --prompt "The meaning of life is"   (a Hugging Face directory)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    parser.add_argument("--prompt", default="", help="text to continue (default: start from a newline)")
    parser.add_argument("--max-new-tokens", type=int, default=300)
    add_sampling_arguments(parser)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT", help="end a sample at TEXT")
    parser.add_argument("--no-stream", action="store_true", help="print each sample once it is complete")
    add_device_argument(parser)
    parser.add_argument(
        "--compile", action="store_true", help="compile the decoding step (faster tokens; the first run compiles)"
    )
    add_checkpoint_choice(parser)


def run(args: argparse.Namespace) -> None:
    from lucidlm.decode import SamplingConfig
    from lucidlm.device import pick_device
    from lucidlm.generate import compile_decoding, generate_text
    from lucidlm.load import load_model
    from lucidlm.model.onednn import decode_with_onednn
    from lucidlm.tokenizers.base import encode_prompt

    if args.max_new_tokens < 1 or args.num_samples < 1:
        raise ConfigError("--max-new-tokens and --num-samples must be at least 1")
    device = pick_device(args.device)
    model, tokenizer, _ = load_model(args.checkpoint, args.which, device=device, dtype=args.dtype)
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    prompt_ids = encode_prompt(tokenizer, args.prompt)
    note_unknown_words(tokenizer.unknown_symbols(args.prompt) if tokenizer.unknown_token else [])
    if len(prompt_ids) > model.config.block_size:
        print(
            f"note: the prompt has {len(prompt_ids)} tokens; only its last {model.config.block_size} "
            "(the model's context) are used",
            file=sys.stderr,
        )
    compiled = None
    if args.compile:
        compiled = compile_decoding(model)
        print("note: the first token waits while the decoding step compiles", file=sys.stderr)
    else:
        decode_with_onednn(model)
    generator = sampling_generator(device, args.seed)
    for sample in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {sample + 1} ---")
        started, pieces, generated = time.perf_counter(), [], []
        print(args.prompt, end="", flush=True)
        for piece in generate_text(
            model, tokenizer, args.prompt, args.max_new_tokens, sampling, args.stop, generator, compiled, generated
        ):
            pieces.append(piece)
            if not args.no_stream:
                print(piece, end="", flush=True)
        if args.no_stream:
            print("".join(pieces), end="")
        print()
        seconds = time.perf_counter() - started
        print(f"[{len(generated)} tokens in {seconds:.2f}s]", file=sys.stderr)
