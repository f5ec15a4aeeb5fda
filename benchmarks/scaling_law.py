"""The scaling law behind recipe=auto: `lucidlm scale`'s default grid on Tiny Shakespeare (char tokens).

Trains the grid (about 9 minutes on 2 cores with bf16 units), fits L(N, D) = E + A/N^a + B/D^b, and reports
how well it predicts the run it left out (issue 38's target: within 0.03 nats). train/recipe.py's
SHAKESPEARE_LAW holds the fitted numbers.

    python benchmarks/scaling_law.py                 (trains the grid into build/bench/scale)
    python benchmarks/scaling_law.py --study DIR     (reports a study `lucidlm scale` already wrote)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import ROOT, WORK, machine, machine_line, tiny_shakespeare_data, write_results

from lucidlm.cli.scale import DEFAULT_CHECK, DEFAULT_GRID


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", help="a directory `lucidlm scale` wrote (default: train the grid now)")
    args = parser.parse_args()
    if args.study:
        from lucidlm.data.loader import read_meta
        from lucidlm.train.scaling_study import fit_points

        study = json.loads((Path(args.study) / "scale.json").read_text())
        unique = read_meta(study["data"])["train_tokens"]
        study["law"] = fit_points(study["points"], study["checks"], unique).to_dict()
    else:
        from lucidlm.train.scaling_study import parse_runs
        from lucidlm.train.scaling_study import study as run_study

        grid, check = parse_runs(DEFAULT_GRID), parse_runs(DEFAULT_CHECK)
        study = run_study(tiny_shakespeare_data(), WORK / "scale", grid, check, force=True)
    from lucidlm.scaling_law import ScalingLaw
    from lucidlm.train.scaling_study import draw

    law, rows = study["law"], []
    draw(ScalingLaw(**law), study["points"], study["checks"], ROOT / "docs" / "scaling_law.png")
    for point in [*study["points"], *study["checks"]]:
        left_out = point in study["checks"]
        rows.append(
            f"| {point['depth']} | {point['parameters']:,} | {point['tokens']:,} | {point['loss']:.4f} | "
            f"{point['predicted']:.4f} | {point['predicted'] - point['loss']:+.4f}{' (left out)' if left_out else ''} |"
        )
    check = study["checks"][0]
    table = "\n".join(
        [
            "## A scaling law for the shakespeare-char recipe (`benchmarks/scaling_law.py`, `lucidlm scale`)",
            "",
            "Tiny Shakespeare as char tokens; each run trains one depth of the dial (n_embd = 32 x depth, heads "
            "of 64) with the preset's layout, Muon and learning rates, a cosine over exactly its tokens, then "
            "scores the whole val split. Repeated tokens count at their worth (Muennighoff et al., 2023). "
            + machine_line(),
            "",
            "| depth | parameters | tokens | val loss | the law | error |",
            "|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Fitted: L(N, D) = {law['E']:.4f} + {law['A']:.2f} / N^{law['alpha']:.4f} + {law['B']:.1f} / "
            f"D^{law['beta']:.4f}. The run left out of the fit: predicted {check['predicted']:.4f}, measured "
            f"{check['loss']:.4f} ({check['predicted'] - check['loss']:+.4f} nats; the target is within 0.03). "
            "train/recipe.py's SHAKESPEARE_LAW holds these numbers.",
            "",
            "![The runs, the fitted law, and its isoFLOP curves](scaling_law.png)",
        ]
    )
    write_results("scaling_law", {"machine": machine(), **study}, table)


if __name__ == "__main__":
    main()
