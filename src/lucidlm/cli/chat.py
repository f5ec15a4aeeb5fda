"""`lucidlm chat`: talk to a model in the terminal (reads piped input too, a turn a line)."""

from __future__ import annotations

import argparse
import sys

from lucidlm.cli.common import (
    add_checkpoint_choice,
    add_device_argument,
    add_sampling_arguments,
    sampling_generator,
)
from lucidlm.errors import ConfigError

NAME = "chat"
HELP = "talk to a model in the terminal (reads piped input too, a turn a line)"
GUIDE = "docs/guides/chat-and-tuning.md"
EXAMPLES = """examples:
  lucidlm chat --checkpoint runs/sft                    (type a message; /system TEXT, /reset, /exit)
  lucidlm chat --checkpoint hf:models/qwen3 --temperature 0.7 --top-p 0.9
  printf 'What is 2 plus 3?
Reverse abc.
' | lucidlm chat --checkpoint runs/sft --temperature 0
  lucidlm chat --checkpoint runs/tools --tools calculator   (the model may call it; the chat runs it)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    parser.add_argument("--system", help="a system prompt to start with")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="the longest reply (default 256)")
    parser.add_argument(
        "--tools", action="append", default=[], metavar="NAME", help="offer a built-in tool: calculator"
    )
    add_sampling_arguments(parser)
    add_device_argument(parser)
    add_checkpoint_choice(parser)


def run(args: argparse.Namespace) -> None:
    from lucidlm.chat.repl import ChatSession, run_chat
    from lucidlm.chat.template import chat_template
    from lucidlm.decode import SamplingConfig
    from lucidlm.device import pick_device
    from lucidlm.load import load_model
    from lucidlm.model.onednn import decode_with_onednn

    if args.max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be at least 1")
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    device = pick_device(args.device)
    model, tokenizer, _ = load_model(args.checkpoint, args.which, device=device, dtype=args.dtype)
    decode_with_onednn(model)
    if chat_template(tokenizer) is None:
        print(
            "note: this model has no chat template (a base model); the chat is written as 'User:'/'Assistant:' "
            "lines. Fine-tune it on conversations for real replies (README: Chat)",
            file=sys.stderr,
        )
    generator = sampling_generator(device, args.seed)
    run_chat(ChatSession(model, tokenizer, sampling, args.max_new_tokens, generator, args.system, args.tools))
