"""`lucidlm scale`: fit a scaling law L(N, D) to a grid of short runs, and draw it."""

from __future__ import annotations

import argparse
from pathlib import Path

from lucidlm.cli.common import (
    add_device_argument,
)
from lucidlm.outputs import FORCE, FORCE_HELP

NAME = "scale"
HELP = "fit a scaling law L(N, D) to a grid of short runs, and draw it"
GUIDE = "docs/guides/training.md"
EXAMPLES = """examples:
  lucidlm scale --data data/shakespeare-char --out runs/scale   (the default grid: ten short runs)
  lucidlm scale --data data/mine --out runs/scale-mine --grid 2:300000,3:300000,4:300000,2:1e6,3:1e6,4:1e6 \\
      --check 3:2e6     (fit on six runs, and see how well the law predicts a seventh)"""
DEFAULT_GRID = "2:3e5,2:1.2e6,3:3e5,3:1.2e6,3:3e6,4:3e5,4:1.2e6,4:3e6,6:3e5,6:1.2e6"
DEFAULT_CHECK = "5:2e6"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lucidlm.run_config import PRESETS  # no PyTorch: the model's settings, not the model

    parser.add_argument("--data", required=True, help="a prepared DATA_DIR")
    parser.add_argument("--out", required=True, help="the study's directory: parser.json, parser.png, runs/")
    parser.add_argument("--grid", default=DEFAULT_GRID, metavar="D:T,...", help="runs as DEPTH:TOKENS, comma-separated")
    parser.add_argument("--check", default=DEFAULT_CHECK, metavar="D:T,...", help="runs left out of the fit")
    parser.add_argument("--preset", choices=list(PRESETS), default="shakespeare-char", help="layout and optimizer")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting for every run")
    parser.add_argument(FORCE, action="store_true", help=FORCE_HELP)
    add_device_argument(parser, default=None)


def run(args: argparse.Namespace) -> None:
    from lucidlm.train.scaling_study import parse_runs, study

    overrides = [*args.set, *([f"device={args.device}"] if args.device else [])]
    grid, check = parse_runs(args.grid), parse_runs(args.check) if args.check else []
    result = study(args.data, args.out, grid, check, args.preset, overrides, args.force)
    law = result["law"]
    print(f"L(N, D) = {law['E']:.3f} + {law['A']:.4g} / N^{law['alpha']:.3f} + {law['B']:.4g} / D^{law['beta']:.3f}")
    for point in result["checks"]:
        error = point["predicted"] - point["loss"]
        print(
            f"left out: depth {point['depth']} on {point['tokens']:,} tokens: predicted {point['predicted']:.4f}, "
            f"measured {point['loss']:.4f} ({error:+.4f})"
        )
    print(f"the picture: {Path(args.out) / 'scale.png'}")
