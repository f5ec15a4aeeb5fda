"""`lucidlm lens`: look inside a model: logit lens, head scores, ablation, attribution, patching."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lucidlm.cli.common import (
    add_device_argument,
)
from lucidlm.errors import ConfigError
from lucidlm.outputs import FORCE, FORCE_HELP, PNG_FILE, check_file_target, written_file

NAME = "lens"
HELP = "look inside a model: logit lens, head scores, ablation, attribution, patching"
GUIDE = "docs/guides/lens.md"
EXAMPLES = """examples:
  lucidlm lens logit --checkpoint runs/a --prompt "ROMEO: I love"   (each layer's guess at every position)
  lucidlm lens heads --checkpoint hf:models/gpt2 --png heads.png     (find the induction heads)
  lucidlm lens ablate --checkpoint runs/a --prompt "$(head -c 200 notes.txt)" --kind mean --png ablate.png
  lucidlm lens attribute --checkpoint runs/a --prompt "To be or not to" --token " b" --other " n"
  lucidlm lens patch --checkpoint runs/a --clean "the cat sat" --corrupted "the dog sat" --answer " on" \\
      --wrong " in"      (add --json to any of them for the numbers)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("analysis", choices=list(ANALYSES))
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    parser.add_argument("--prompt", help="logit, ablate, attribute: the text")
    parser.add_argument("--top", type=int, default=3, help="logit: the tokens shown per layer and position")
    parser.add_argument("--length", type=int, help="heads: random tokens before their repetition (default 50)")
    parser.add_argument("--kind", choices=["zero", "mean"], default="zero", help="ablate: what replaces an output")
    parser.add_argument("--position", type=int, default=-1, help="attribute: the position (default: the last)")
    parser.add_argument("--token", help="attribute: the token whose logit is split (a text that is one token)")
    parser.add_argument("--other", help="attribute: split the logit difference token - other instead")
    parser.add_argument("--clean", help="patch: the prompt whose answer is restored")
    parser.add_argument("--corrupted", help="patch: the same length, with the answer's evidence changed")
    parser.add_argument("--answer", help="patch: the clean run's answer (one token)")
    parser.add_argument("--wrong", help="patch: the token the corrupted run prefers (one token)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--png", metavar="FILE", help="heads, ablate, patch, logit: draw the heatmap there too")
    parser.add_argument(FORCE, action="store_true", help=FORCE_HELP)
    add_device_argument(parser)


@dataclass(frozen=True)
class Analysis:
    """One `lucidlm lens` analysis: the flags it cannot run without, whether its result has a picture (its
    `panels`), and how it runs on the model from the arguments: (the typed result, the ids its table labels)."""

    needs: tuple[str, ...]
    picture: bool
    compute: Callable[[Any, Any, argparse.Namespace], tuple[Any, list[int] | None]]


def _logit(model, tokenizer, args):
    from lucidlm.lens import logit_lens

    ids = encode_prompt(tokenizer, args.prompt)
    return logit_lens(model, ids, args.top), ids


def _heads(model, tokenizer, args):
    from lucidlm.lens import head_scores

    return head_scores(model, args.length), None


def _ablate(model, tokenizer, args):
    from lucidlm.lens import ablation

    ids = encode_prompt(tokenizer, args.prompt)
    return ablation(model, ids, args.kind), ids


def _attribute(model, tokenizer, args):
    from lucidlm.lens import direct_logit_attribution, one_token

    ids = encode_prompt(tokenizer, args.prompt)
    position = args.position + len(ids) if args.position < 0 else args.position
    token, other = one_token(tokenizer, args.token, "--token"), one_token(tokenizer, args.other, "--other")
    return direct_logit_attribution(model, ids, position, token, other), ids


def _patch(model, tokenizer, args):
    from lucidlm.lens import one_token, patching

    clean, corrupted = encode_prompt(tokenizer, args.clean), encode_prompt(tokenizer, args.corrupted)
    answer, wrong = one_token(tokenizer, args.answer, "--answer"), one_token(tokenizer, args.wrong, "--wrong")
    return patching(model, clean, corrupted, answer, wrong), clean


ANALYSES = {
    "logit": Analysis(("prompt",), True, _logit),
    "heads": Analysis((), True, _heads),
    "ablate": Analysis(("prompt",), True, _ablate),
    "attribute": Analysis(("prompt", "token"), False, _attribute),
    "patch": Analysis(("clean", "corrupted", "answer", "wrong"), True, _patch),
}


def encode_prompt(tokenizer, text: str) -> list[int]:
    from lucidlm.tokenizers.base import encode_prompt as encode

    return encode(tokenizer, text)


def run(args: argparse.Namespace) -> None:
    from lucidlm.device import pick_device
    from lucidlm.load import load_model

    analysis = ANALYSES[args.analysis]
    missing = [f"--{name}" for name in analysis.needs if getattr(args, name) is None]
    if missing:
        raise ConfigError(f"lens {args.analysis} needs {' and '.join(missing)}")
    if args.png is not None and not analysis.picture:
        raise ConfigError(f"lens {args.analysis} has no picture; drop --png")
    if args.png is not None:
        check_file_target(args.png, PNG_FILE, args.force, "--png")  # before the work, which may take a while
    model, tokenizer, _ = load_model(args.checkpoint, device=pick_device(args.device))
    try:
        result, ids = analysis.compute(model, tokenizer, args)
    except ValueError as exc:  # an index, a length or a prompt the analysis cannot take
        raise ConfigError(str(exc)) from None
    print(json.dumps(result.to_json()) if args.json else result.table(tokenizer, ids))
    if args.png is not None:
        with written_file(args.png, PNG_FILE, args.force, "--png") as tmp:
            result.draw(tokenizer, ids, tmp)
