"""Scaling laws (scaling_law.py, train/scaling_study.py) and the recipe that sizes a timed run (train/recipe.py)."""

import json
import math

import pytest
import torch

from lucidlm.model import GPT, GPTConfig
from lucidlm.run_config import PRESETS, resolve_config
from lucidlm.scaling_law import (
    ScalingLaw,
    choose_depth,
    count_parameters,
    depth_shape,
    effective_tokens,
    tokens_worth,
    with_depth,
)
from lucidlm.train import recipe
from lucidlm.train.plan import carry_out, plan_run

from ..conftest import run_lucidlm

LAW = ScalingLaw(E=1.2, A=40.0, alpha=0.35, B=900.0, beta=0.45)


def test_the_fit_finds_the_law_that_made_the_points_and_predicts_beyond_them():
    grid = [(n, d, LAW.loss(n, d)) for n in (1e5, 3e5, 1e6, 3e6) for d in (3e5, 1e6, 3e6)]
    fitted = ScalingLaw.fit(grid)
    for n, d in [(1e7, 1e7), (5e5, 2e6), (1e5, 3e7)]:  # a larger model, a point between, many more tokens
        assert fitted.loss(n, d) == pytest.approx(LAW.loss(n, d), abs=1e-3)
    with pytest.raises(ValueError, match="needs at least 5 runs, not 4"):
        ScalingLaw.fit(grid[:4])


def test_the_dial_passes_through_the_preset_and_derives_what_follows_from_the_width():
    preset = PRESETS["shakespeare-char"]["model"]
    assert depth_shape(4) == {"n_layer": 4, "n_embd": 128, "n_head": 2} == {k: preset[k] for k in depth_shape(4)}
    assert depth_shape(2) == {"n_layer": 2, "n_embd": 64, "n_head": 1}
    assert depth_shape(6) == {"n_layer": 6, "n_embd": 192, "n_head": 3}
    model = resolve_config("shakespeare-char", overrides=["vocab_size=65"]).model
    deeper = with_depth(model, 6)
    assert (deeper.head_dim, deeper.n_kv_head, deeper.mlp_hidden) == (64, 3, 512)  # 8/3 x 192, rounded up to 32
    assert count_parameters(deeper) == sum(p.numel() for p in GPT(deeper).parameters())


def test_repeated_tokens_are_worth_less_than_fresh_ones():
    assert effective_tokens(5e5, 1e6) == 5e5  # less than one epoch: every token is new
    assert 1.9e6 < effective_tokens(2e6, 1e6) < 2e6  # a second epoch is worth almost as much
    assert effective_tokens(1e9, 1e6) == pytest.approx(1e6 * (1 + 15.4))  # endless repeats: U (1 + R*)


def test_the_depth_is_a_pure_function_of_speed_budget_and_data():
    parameters = {depth: count_parameters(with_depth(GPTConfig(vocab_size=65), depth)) for depth in (2, 3, 4, 6)}
    fast = {2: 80_000.0, 3: 55_000.0, 4: 30_000.0, 6: 15_000.0}
    slow = {depth: speed / 5 for depth, speed in fast.items()}
    on_fast = choose_depth(LAW, parameters, fast, 120, 10**6)
    on_slow = choose_depth(LAW, parameters, slow, 120, 10**6)
    expected = {d: LAW.loss(parameters[d], effective_tokens(fast[d] * 120, 10**6)) for d in fast}
    assert on_fast.depth == min(expected, key=expected.get) and on_fast.predicted_loss == expected[on_fast.depth]
    assert on_slow.depth < on_fast.depth  # a slower machine trains a smaller model
    assert choose_depth(LAW, parameters, fast, 120, 10**6) == on_fast  # the same inputs, the same choice
    # a corpus of a few thousand tokens teaches little however fast the machine: the larger model wins
    assert choose_depth(LAW, parameters, fast, 120, 5_000).depth == 6
    assert f"120 s at {fast[on_fast.depth]:,.0f} tokens/s buy depth {on_fast.depth}" in on_fast.why


def test_the_law_and_the_worth_of_repeats_invert():
    for n, d in [(1e5, 3e5), (1e6, 5e7)]:
        assert LAW.tokens_for(LAW.loss(n, d), n) == pytest.approx(d, rel=1e-9)
    assert LAW.tokens_for(1.2 + 40.0 / 1e5**0.35, 1e5) == math.inf  # the model's floor: no data gets it lower
    for tokens in (5e5, 2e6, 4e7):
        assert tokens_worth(effective_tokens(tokens, 1e6), 1e6) == pytest.approx(tokens, rel=1e-9)
    assert tokens_worth(1e6 * (1 + 15.4), 1e6) == math.inf  # more than endless repeats are worth


def test_a_target_loss_stretches_the_budget_of_a_slow_machine_only():
    parameters = {depth: count_parameters(with_depth(GPTConfig(vocab_size=65), depth)) for depth in (2, 3, 4, 6)}
    fast = {2: 80_000.0, 3: 55_000.0, 4: 30_000.0, 6: 15_000.0}
    slow = {depth: speed / 5 for depth, speed in fast.items()}
    on_fast = choose_depth(LAW, parameters, fast, 120, 10**7)
    assert choose_depth(LAW, parameters, fast, 120, 10**7, target_loss=on_fast.predicted_loss + 0.01) == on_fast
    target = on_fast.predicted_loss
    on_slow = choose_depth(LAW, parameters, slow, 120, 10**7, target_loss=target)
    needed = {d: LAW.tokens_for(target, parameters[d]) / slow[d] for d in slow}
    assert on_slow.depth == min(needed, key=needed.get) and on_slow.seconds == pytest.approx(min(needed.values()))
    assert on_slow.seconds > 120 and on_slow.predicted_loss == target
    assert LAW.loss(parameters[on_slow.depth], on_slow.tokens) == pytest.approx(target)
    assert f"the budget stretched to {on_slow.seconds:.0f} s" in on_slow.why
    unreachable = choose_depth(LAW, parameters, slow, 120, 10**7, target_loss=1.21)  # below every model's floor
    assert unreachable.seconds == 120 and "no depth reaches the target 1.21" in unreachable.why


@pytest.fixture
def measured(monkeypatch):
    """Fixed speeds in place of this machine's (recipe.measure_tokens_per_second), a slow machine's."""
    speeds = {2: 16_000.0, 3: 11_000.0, 4: 6_500.0, 5: 4_000.0, 6: 2_800.0, 8: 1_500.0, 10: 900.0, 12: 600.0}
    asked = []

    def fixed(config, depth, device):
        asked.append(depth)
        return speeds[depth]

    monkeypatch.setattr(recipe, "measure_tokens_per_second", fixed)
    monkeypatch.setattr(recipe, "SHAKESPEARE_LAW", LAW)
    monkeypatch.setattr("lucidlm.train.plan.MIN_RECIPE_TOKENS", 0)  # the tests' corpus is a few hundred tokens
    return asked


def test_a_time_budgeted_preset_run_is_sized_for_the_machine_and_says_why(tmp_path, data_dir, measured):
    plan = plan_run(data_dir, tmp_path / "run", "shakespeare-char", overrides=["time_budget=2", "device=cpu"])
    choice = plan.recipe
    assert plan.config.model.n_layer == choice["depth"] != 4 and measured[0] == 2
    assert measured == sorted(measured) and measured[:3] == [2, 3, 4]  # from the smallest up
    assert choice["measured_tokens_per_second"]["2"] == 16_000 and "the scaling law predicts" in choice["why"]
    carry_out(plan, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["recipe"] == choice and saved["model"]["n_layer"] == choice["depth"]


def test_a_target_loss_out_of_the_budgets_reach_trains_longer_and_says_so(tmp_path, data_dir, measured):
    in_budget = plan_run(data_dir, tmp_path / "run", "shakespeare-char", overrides=["time_budget=2"]).recipe
    target = round(in_budget["predicted_val_loss"] - 0.2, 4)
    plan = plan_run(
        data_dir, tmp_path / "run", "shakespeare-char", overrides=["time_budget=2", f"target_loss={target}"]
    )
    assert (
        plan.config.train.time_budget == pytest.approx(plan.recipe["seconds"], abs=0.1) and plan.recipe["seconds"] > 2
    )
    assert plan.recipe["predicted_val_loss"] == target and "the budget stretched to" in plan.recipe["why"]
    args = ["train", "--data", str(data_dir), "--out", str(tmp_path / "fixed"), "--max-steps", "2"]
    result = run_lucidlm(*args, "--preset", "nanogpt-baby", "--set", "target_loss=1.5")
    assert result.returncode == 2 and "target_loss stretches a time budget that recipe=auto sizes" in result.stderr


def test_explicit_sizes_a_step_count_or_recipe_fixed_keep_the_model_as_set(tmp_path, data_dir, measured):
    unsized = (["time_budget=2", "n_layer=3"], ["time_budget=none", "max_steps=5"], ["recipe=fixed"], ["backend=numpy"])
    for overrides in unsized:
        plan = plan_run(data_dir, tmp_path / "run", "shakespeare-char", overrides=[*overrides, "device=cpu"])
        assert plan.recipe is None
    assert measured == []
    toml = tmp_path / "size.toml"
    toml.write_text("[model]\nn_embd = 96\nn_head = 1\n")
    assert plan_run(data_dir, tmp_path / "run", "shakespeare-char", toml, ["time_budget=2"]).recipe is None


def test_a_corpus_far_smaller_than_the_laws_keeps_the_presets_shape(tmp_path, data_dir, measured, monkeypatch):
    monkeypatch.setattr("lucidlm.train.plan.MIN_RECIPE_TOKENS", 100_000)
    plan = plan_run(data_dir, tmp_path / "run", "shakespeare-char", overrides=["time_budget=2"])
    assert plan.recipe is None and plan.config.model.n_layer == 4 and measured == []


def test_the_speed_of_a_depth_is_measured_on_this_machine():
    config = resolve_config("shakespeare-char", overrides=["vocab_size=65", "batch_size=2", "block_size=32"])
    speed = recipe.measure_tokens_per_second(config, 2, torch.device("cpu"))
    assert math.isfinite(speed) and speed > 0


def test_lucidlm_scale_fits_a_grid_draws_it_and_predicts_a_run_it_left_out(tmp_path):
    text = tmp_path / "t.txt"
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "the", "dog", "ran", "to", "the", "park"]
    text.write_text(" ".join(words[(i * i + 3 * i) % len(words)] for i in range(40_000)))
    prepared = run_lucidlm("data", "prepare", "--input", text, "--tokenizer", "char", "--out", tmp_path / "data")
    assert prepared.returncode == 0, prepared.stderr
    grid = "1:2e4,1:6e4,2:2e4,2:6e4,3:2e4,3:6e4"
    result = run_lucidlm(
        "scale", "--data", tmp_path / "data", "--out", tmp_path / "study", "--grid", grid, "--check", "2:1e5",
        "--set", "block_size=32", "--device", "cpu", timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    study = json.loads((tmp_path / "study" / "scale.json").read_text())
    assert len(study["points"]) == 6 and len(study["checks"]) == 1
    assert (tmp_path / "study" / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check = study["checks"][0]
    assert f"predicted {check['predicted']:.4f}, measured {check['loss']:.4f}" in result.stdout
    # the target; this grid gives about 0.007 (and Tiny Shakespeare's, docs/benchmarks.md, 0.008)
    assert abs(check["predicted"] - check["loss"]) < 0.03, check


def test_a_study_stopped_by_sigterm_fits_nothing_and_continues_from_its_finished_runs(tmp_path):
    """SIGTERM is Ctrl-C: the run it cuts short is not a point, the study exits 143 with its finished runs kept,
    and the same command again trains only the rest."""
    import signal
    import subprocess
    import sys
    import time

    text = tmp_path / "t.txt"
    text.write_text("the cat sat on a mat and the dog ran to the park " * 800)
    prepared = run_lucidlm("data", "prepare", "--input", text, "--tokenizer", "char", "--out", tmp_path / "data")
    assert prepared.returncode == 0, prepared.stderr
    study, grid = tmp_path / "study", "1:4e3,2:4e3,1:8e3,2:8e3,1:12e3"
    args = ["scale", "--data", tmp_path / "data", "--out", study, "--grid", grid, "--check", "2:12e3",
            "--set", "block_size=16", "--set", "batch_size=4", "--device", "cpu"]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "lucidlm", *map(str, args)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (study / "study.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # during the second run, or between two
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    assert "keeps its 1 finished run(s); run the same command again to continue it" in stderr
    assert not (study / "scale.json").exists()
    kept = json.loads((study / "study.json").read_text())["finished"]
    assert list(kept) == ["depth1-4000"] and abs(kept["depth1-4000"]["tokens"] - 4000) < 64  # whole steps
    again = run_lucidlm(*args, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "continuing the study" in again.stderr and "1 run(s) finished before" in again.stderr
    result = json.loads((study / "scale.json").read_text())
    assert len(result["points"]) == 5 and len(result["checks"]) == 1
    assert result["points"][0]["seconds"] == kept["depth1-4000"]["seconds"]  # not trained again
    planned = [[int(d), int(float(t))] for d, t in (run.split(":") for run in grid.split(","))]
    assert [[p["depth"], round(p["tokens"], -3)] for p in result["points"]] == [[d, round(t, -3)] for d, t in planned]
    # a finished study is an earlier output: refused without --force
    assert run_lucidlm(*args).returncode == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--grid", "2:inf"], "'2:inf' is not DEPTH:TOKENS"), (["--grid", "2:nan"], "'2:nan' is not DEPTH:TOKENS"),
     (["--data", "NOTES"], "is a file, and this command reads a prepared data directory; prepare it first")],
)  # fmt: skip
def test_bad_scale_arguments_are_one_line(tmp_path, args, message):
    from lucidlm.cli import build_parser
    from lucidlm.cli.scale import run as run_scale
    from lucidlm.errors import LucidError

    (tmp_path / "notes.txt").write_text("some notes " * 100)
    args = [str(tmp_path / "notes.txt") if a == "NOTES" else a for a in args]
    data = [] if "--data" in args else ["--data", str(tmp_path)]
    with pytest.raises(LucidError) as refused:
        run_scale(build_parser().parse_args(["scale", *data, "--out", str(tmp_path / "study"), *args]))
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "study").exists()
