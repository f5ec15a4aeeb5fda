"""Experiment trackers (train/tracking.py): what each receives, read back from its own store."""

import json
import os
import sqlite3
import sys
import types

import pytest

from lucidlm.errors import ConfigError
from lucidlm.train import train

from ..conftest import run_lucidlm, tiny_config


def logged(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_receives_every_series_and_the_settings(tmp_path, data_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(data_dir, run, tiny_config(34, max_steps=6, eval_interval=3, tracker="tensorboard"), progress=False)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    records = logged(run)
    steps = [r for r in records if "loss" in r]
    evaluations = [r for r in records if "val_loss" in r]
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_second", "val/loss", "val/bpb"} <= set(
        scalars
    )
    read = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in scalars}
    assert read["train/loss"] == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in steps]
    assert read["train/grad_norm"] == [(r["step"], pytest.approx(r["grad_norm"], rel=1e-6)) for r in steps]
    assert read["val/loss"] == [(r["step"], pytest.approx(r["val_loss"], rel=1e-6)) for r in evaluations]
    assert all(value > 0 for _, value in read["train/tokens_per_second"])
    assert '"batch_size": 4' in events.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()


def test_trackio_stores_the_series_and_the_settings_locally(tmp_path, text_file):
    """Through the command line, in a process whose TRACKIO_DIR is this test's."""
    store = tmp_path / "trackio"
    result = run_lucidlm(
        "train", "--data", text_file, "--out", tmp_path / "run", "--preset", "nanogpt-baby", "--max-steps", "4",
        "--set", "eval_interval=2", "--set", "tracker=trackio", "--set", "block_size=16",
        env={**os.environ, "TRACKIO_DIR": str(store), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    database = sqlite3.connect(store / "lucidlm.db")
    rows = database.execute("SELECT step, metrics FROM metrics WHERE run_name = 'run' ORDER BY id").fetchall()
    received = [(step, json.loads(values)) for step, values in rows]
    records = logged(tmp_path / "run")
    expected = [r for r in records if "loss" in r]
    got = [(step, values["train/loss"]) for step, values in received if "train/loss" in values]
    assert got == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in expected]
    assert [step for step, values in received if "val/loss" in values] == [2, 4]
    (config,) = database.execute("SELECT config FROM configs WHERE run_name = 'run'").fetchone()
    assert json.loads(config)["train"]["max_steps"] == 4


def test_wandb_runs_offline_unless_configured(tmp_path, data_dir, monkeypatch):
    """wandb is not installed for the tests: a stand-in module records what lucidlm asks of it."""
    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("log", step, dict(values)))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "run"
    train(data_dir, run, tiny_config(34, max_steps=3, eval_interval=3, tracker="wandb"), progress=False)
    kind, kwargs = calls[0]
    assert kind == "init" and kwargs["mode"] == "offline" and kwargs["dir"] == str(run)
    assert kwargs["project"] == "lucidlm" and kwargs["config"]["train"]["max_steps"] == 3
    assert [c[1] for c in calls if c[0] == "log" and "train/loss" in c[2]] == [1, 2, 3]
    assert calls[-1] == ("finish",)
    monkeypatch.setenv("WANDB_API_KEY", "configured")
    calls.clear()
    train(data_dir, tmp_path / "online", tiny_config(34, max_steps=1, tracker="wandb"), progress=False)
    assert calls[0][1]["mode"] is None  # the user's own configuration decides


def test_a_tracker_that_is_not_installed_is_one_clear_error(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"tracker=wandb needs the wandb package; install it with pip install"):
        train(data_dir, tmp_path / "run", tiny_config(34, max_steps=1, tracker="wandb"), progress=False)
    with pytest.raises(ConfigError, match="tracker 'mlflow' is not one of: none, tensorboard, wandb, trackio"):
        tiny_config(34, tracker="mlflow")
