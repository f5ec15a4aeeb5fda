"""What several commands share: their device, sampling and checkpoint arguments, and notes on stderr."""

from __future__ import annotations

import argparse
import sys

DEVICES = ("auto", "cpu", "cuda", "mps")


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """--device: auto picks cuda, then mps, then cpu (train: None, so that a preset or --config may choose)."""
    parser.add_argument("--device", default=default, choices=DEVICES, help="default auto")


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free one), checked when the arguments are read."""
    if not (text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text} is not a port; give one from 1 to 65535 (0: any free port)")
    return int(text)


def add_sampling_arguments(
    parser: argparse.ArgumentParser, temperature: float = 0.8, seed: int | None = None, only: str = ""
) -> None:
    """--temperature, --top-k, --top-p and --seed, as generate, chat and eval --tasks take them."""
    parser.add_argument(
        "--temperature", type=float, default=temperature, help=f"{only}0 is greedy; default {temperature:g}"
    )
    parser.add_argument("--top-k", type=int, help=f"{only}sample from the k likeliest tokens")
    parser.add_argument("--top-p", type=float, help=f"{only}sample from the smallest set of tokens of probability p")
    seeded = "same seed, same text" if seed is None else f"the sampling seed (default {seed})"
    parser.add_argument("--seed", type=int, default=seed, help=only + seeded)


def sampling_generator(device, seed: int | None):
    """The random generator sampling draws from: seeded when asked (same seed, same text), else fresh."""
    import torch

    from lucidlm.decode import seed_generator

    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
        return generator
    return seed_generator(generator, seed)


def note_unknown_words(unknown: list[str]) -> None:
    """Words a word-level vocabulary reads as <unk>: said on stderr (the one rule for every command)."""
    if unknown:
        shown = " ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        print(f"note: {len(unknown)} word(s) not in the vocabulary are read as <unk>: {shown}", file=sys.stderr)


def add_checkpoint_choice(parser: argparse.ArgumentParser) -> None:
    """--which and --dtype, for the commands that load a model."""
    parser.add_argument(
        "--which",
        default="best",
        metavar="best|latest|step-N",
        help="the checkpoint: lowest val loss (default), the newest, or step N's",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        help="hf:DIR only: load the weights in this dtype (default: as stored)",
    )
