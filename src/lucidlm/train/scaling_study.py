"""`lucidlm scale`: a grid of short runs, the scaling law fitted to them, and its picture.

Each run trains one depth of the dial (scaling.depth_shape) on one number of tokens, with the preset's layout,
optimizer and learning rates and a cosine over exactly those tokens, then scores the whole validation split.
The law L(N, D) = E + A / N^alpha + B / D^beta is fitted to every run (scaling.ScalingLaw.fit), and scale.png
draws the runs, the fit, and its isoFLOP curves: for each compute budget, the loss of every size that budget
buys, with the best size marked. A run left out of the fit (`--check DEPTH:TOKENS`) says how well the law
predicts what it has not seen.

A study grows in its directory as its runs finish: study.json holds its settings and every run that has
finished, written after each one. Interrupted (Ctrl-C, SIGTERM, SIGHUP), it keeps those and fits nothing; the same
command again continues from them, training the rest (a run cut short starts over).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lucidlm.data.loader import open_split, read_meta
from lucidlm.errors import ConfigError, interruption
from lucidlm.evaluate import split_loss
from lucidlm.inputs import COUNT, NUMBER, read_json
from lucidlm.outputs import SCALING_STUDY, growing_directory, real_path, write_json_atomic
from lucidlm.run_config import resolve_config
from lucidlm.scaling_law import ScalingLaw, count_parameters, depth_shape, effective_tokens
from lucidlm.train.trainer import train

WARMUP_SHARE = 5  # a run warms up over at most a fifth of its steps (the preset's 50 when it has 250 or more)


@dataclass(frozen=True)
class GridRun:
    depth: int
    tokens: int


def parse_runs(text: str) -> list[GridRun]:
    """ "4:1000000,6:500000" -> runs of (depth, tokens); a clear error for anything else."""
    runs = []
    for item in text.split(","):
        depth, _, tokens = item.strip().partition(":")
        try:
            runs.append(GridRun(int(depth), int(float(tokens))))
        except (ValueError, OverflowError):  # "x", nan, inf
            raise ConfigError(f"{item.strip()!r} is not DEPTH:TOKENS (e.g. 4:1000000)") from None
        if runs[-1].depth < 1 or runs[-1].tokens < 1:
            raise ConfigError(f"{item.strip()!r}: depth and tokens must be positive")
    return runs


def train_one(data_dir: Path, out: Path, run: GridRun, preset: str, overrides: list[str], progress: bool) -> dict:
    """Train one grid run into `out` and score the whole validation split."""
    vocab = read_meta(data_dir)["vocab_size"]
    config = resolve_config(preset, overrides=[f"vocab_size={vocab}", *overrides])
    tokens_per_step = config.train.batch_size * config.train.grad_accum * config.model.block_size
    steps = max(1, round(run.tokens / tokens_per_step))
    shape = [f"{name}={value}" for name, value in depth_shape(run.depth).items()]
    settings = [
        *shape,
        f"max_steps={steps}",
        "time_budget=none",
        "decay_steps=none",
        f"warmup_steps={min(config.train.warmup_steps, steps // WARMUP_SHARE)}",
        f"eval_interval={steps}",
    ]
    config = resolve_config(preset, overrides=[f"vocab_size={vocab}", *overrides, *settings])
    result = train(data_dir, out, config, progress=progress)
    if result.interrupted:  # the run saved where it was: the study stops too, and counts it as not finished
        raise interruption(result.interrupted)
    loss, _ = split_loss(result.model.eval(), np.asarray(open_split(data_dir, "val")))
    return {
        "depth": run.depth,
        "parameters": count_parameters(config.model),
        "tokens": steps * tokens_per_step,
        "loss": loss,
        "seconds": round(result.elapsed, 1),
        "compile_seconds": round(result.compile_seconds, 1),
    }


def study(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    grid: list[GridRun],
    check: list[GridRun] | None = None,
    preset: str = "shakespeare-char",
    overrides: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Train `grid` and `check` (what an unfinished study of the same settings in `out` has not), fit the law to
    the grid, and write scale.json and scale.png into `out`."""
    data_dir, overrides, check = Path(data_dir), list(overrides or []), list(check or [])
    meta = read_meta(data_dir)
    if len(grid) < 5:
        raise ConfigError(f"a law of five numbers needs at least 5 runs in the grid, not {len(grid)}")
    settings = {
        "grid": [[run.depth, run.tokens] for run in grid],
        "check": [[run.depth, run.tokens] for run in check],
        "preset": preset,
        "settings": overrides,
        "data": hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest(),  # meta.json's content
    }
    with study_directory(out, settings, force) as (directory, finished):
        points, checks = [], []
        for runs, kept in ((grid, points), (check, checks)):
            for run in runs:
                name = f"depth{run.depth}-{run.tokens}"
                if name not in finished:
                    shutil.rmtree(directory / "runs" / name, ignore_errors=True)  # one that a stop cut short
                    finished[name] = train_one(data_dir, directory / "runs" / name, run, preset, overrides, False)
                    write_json_atomic(directory / STUDY_FILE, {"settings": settings, "finished": finished})
                    if progress:
                        done = finished[name]
                        tqdm.write(
                            f"{name}: {done['parameters']:,} parameters, {done['tokens']:,} tokens, val loss "
                            f"{done['loss']:.4f} in {done['seconds']:.0f}s"
                            + (" (left out of the fit)" if runs is check else "")
                        )
                kept.append(dict(finished[name]))
        law = fit_points(points, checks, meta["train_tokens"])
        result = {"law": law.to_dict(), "points": points, "checks": checks, "preset": preset, "data": str(data_dir)}
        draw(law, points, checks, directory / "scale.tmp.png")
        os.replace(directory / "scale.tmp.png", directory / "scale.png")
        write_json_atomic(directory / "scale.json", result)  # last: the study is complete once it is there
    return result


STUDY_FILE = "study.json"  # a study's settings and its finished runs, as they finish
FINISHED_RUN = {  # what train_one reports of a run, as study.json keeps it
    "depth": COUNT, "parameters": COUNT, "tokens": COUNT, "loss": NUMBER, "seconds": NUMBER, "compile_seconds": NUMBER
}  # fmt: skip


@contextlib.contextmanager
def study_directory(out: str | os.PathLike, settings: dict, force: bool) -> Iterator[tuple[Path, dict]]:
    """(the study's directory, its finished runs by name): those of an unfinished study of the same settings
    in `out`, which this continues; else none, in a new directory (or, with --force, in place of an earlier
    study). Interrupted or failed, a study keeps the runs that finished (study.json lists them) and says how to
    go on; one with none is removed, as a training run without a checkpoint is."""
    path = real_path(out)
    earlier = read_study(path)
    with contextlib.ExitStack() as stack:
        if earlier is not None and earlier["settings"] == settings and not (path / "scale.json").exists():
            finished = earlier["finished"]
            print(f"continuing the study in {path}: {len(finished)} run(s) finished before", file=sys.stderr)
        else:
            path, finished = stack.enter_context(growing_directory(path, SCALING_STUDY, force, STUDY_FILE)), {}
        try:
            yield path, finished
        except BaseException:
            if finished:
                print(
                    f"the study in {path} keeps its {len(finished)} finished run(s); run the same command again "
                    "to continue it",
                    file=sys.stderr,
                )
            raise


def read_study(path: Path) -> dict | None:
    """The study.json of a study lucidlm is writing or wrote in `path`, None if there is none."""
    if not SCALING_STUDY.holds(path):
        return None
    fix = f"remove {path} or choose another --out"
    return read_json(path / STUDY_FILE, {"settings": dict, "finished": {"*": FINISHED_RUN}}, ConfigError, fix)


def fit_points(points: list[dict], checks: list[dict], unique: int) -> ScalingLaw:
    """The law through `points` (runs of `train_one`); each run, `checks` too, gets its effective tokens (what
    they are worth drawn from `unique` tokens) and the law's prediction."""
    for point in (*points, *checks):
        point["effective_tokens"] = round(effective_tokens(point["tokens"], unique))
    law = ScalingLaw.fit([(p["parameters"], p["effective_tokens"], p["loss"]) for p in points])
    for point in (*points, *checks):
        point["predicted"] = law.loss(point["parameters"], point["effective_tokens"])
    return law


def draw(law: ScalingLaw, points: list[dict], checks: list[dict], out: Path) -> None:
    """Two panels: the runs' loss against tokens with the law's curve for each size; and isoFLOP curves, the
    loss against size at fixed compute (6 N D), each with its best size marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_tokens, iso) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    sizes = sorted({p["parameters"] for p in points})
    seen = [p["effective_tokens"] for p in points]
    tokens = np.geomspace(min(seen) / 2, max(seen) * 2, 60)
    for index, size in enumerate(sizes):
        color = plt.cm.viridis(index / max(1, len(sizes) - 1))
        runs = [p for p in points if p["parameters"] == size]
        by_tokens.plot([p["effective_tokens"] for p in runs], [p["loss"] for p in runs], "o", color=color)
        by_tokens.plot(tokens, [law.loss(size, t) for t in tokens], "-", color=color, label=f"{size / 1e6:.2f}M")
    for p in checks:
        by_tokens.plot(p["effective_tokens"], p["loss"], "*", color="crimson", markersize=12, label="left out")
    by_tokens.set(xscale="log", xlabel="training tokens D (repeats at their worth)", ylabel="val loss (nats a token)")
    by_tokens.set_title(f"L = {law.E:.2f} + {law.A:.3g}/N^{law.alpha:.2f} + {law.B:.3g}/D^{law.beta:.2f}")
    by_tokens.legend(title="parameters", fontsize=8)
    by_tokens.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    parameters = np.geomspace(sizes[0] / 4, sizes[-1] * 4, 80)
    budgets = np.geomspace(6 * sizes[0] * min(tokens), 6 * sizes[-1] * max(tokens), 5)
    lowest = []
    for index, compute in enumerate(budgets):
        color = plt.cm.plasma(index / len(budgets))
        losses = [law.loss(n, compute / (6 * n)) for n in parameters]
        best = int(np.argmin(losses))
        lowest.append(losses[best])
        iso.plot(parameters, losses, "-", color=color, label=f"C = {compute:.1e} FLOPs")
        iso.plot(parameters[best], losses[best], "o", color=color)
    iso.set_ylim(min(lowest) - 0.1, max(lowest) + 0.6)  # the valleys, not the walls
    iso.set(xscale="log", xlabel="parameters N", ylabel="predicted val loss", title="isoFLOP curves: 6 N D = C")
    iso.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
