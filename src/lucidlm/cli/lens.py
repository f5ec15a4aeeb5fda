"""`lucidlm lens`: look inside a model: logit lens, head scores, ablation, attribution, patching."""

from __future__ import annotations

import argparse
import json

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
    parser.add_argument("analysis", choices=["logit", "heads", "ablate", "attribute", "patch"])
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


def run(args: argparse.Namespace) -> None:
    from lucidlm import lens
    from lucidlm.device import pick_device
    from lucidlm.generate import encode_prompt
    from lucidlm.load import load_model

    needs = {
        "logit": ["prompt"],
        "heads": [],
        "ablate": ["prompt"],
        "attribute": ["prompt", "token"],
        "patch": ["clean", "corrupted", "answer", "wrong"],
    }
    missing = [f"--{name}" for name in needs[args.analysis] if getattr(args, name) is None]
    if missing:
        raise ConfigError(f"lens {args.analysis} needs {' and '.join(missing)}")
    if args.png is not None and args.analysis not in lens.DRAWN:
        raise ConfigError(f"lens {args.analysis} has no picture; drop --png")
    if args.png is not None:
        check_file_target(args.png, PNG_FILE, args.force, "--png")  # before the work, which may take a while
    model, tokenizer, _ = load_model(args.checkpoint, device=pick_device(args.device))
    ids = encode_prompt(tokenizer, args.prompt) if args.prompt is not None else None
    try:
        if args.analysis == "logit":
            result = lens.logit_lens(model, ids, args.top)
        elif args.analysis == "heads":
            result = lens.head_scores(model, args.length)
        elif args.analysis == "ablate":
            result = lens.ablation(model, ids, args.kind)
        elif args.analysis == "attribute":
            position = args.position + len(ids) if args.position < 0 else args.position
            token, other = (
                lens.one_token(tokenizer, text, flag)
                for text, flag in ((args.token, "--token"), (args.other, "--other"))
            )
            result = lens.direct_logit_attribution(model, ids, position, token, other)
        else:
            clean, corrupted = (encode_prompt(tokenizer, text) for text in (args.clean, args.corrupted))
            answer, wrong = (
                lens.one_token(tokenizer, text, flag)
                for text, flag in ((args.answer, "--answer"), (args.wrong, "--wrong"))
            )
            result = lens.patching(model, clean, corrupted, answer, wrong)
    except ValueError as exc:  # an index, a length or a prompt the analysis cannot take
        raise ConfigError(str(exc)) from None
    texts = ids if ids is not None else (clean if args.analysis == "patch" else None)
    print(json.dumps(result) if args.json else lens.table(args.analysis, result, tokenizer, texts))
    if args.png is not None:
        with written_file(args.png, PNG_FILE, args.force, "--png") as tmp:
            lens.draw(args.analysis, result, tokenizer, texts, tmp)
