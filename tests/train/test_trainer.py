import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lucidlm import runs as checkpoint_module
from lucidlm.data import Source, open_split, prepare
from lucidlm.errors import CheckpointError, ConfigError
from lucidlm.evaluate import split_loss
from lucidlm.load import load_model
from lucidlm.run_config import TrainConfig
from lucidlm.runs import find_checkpoint
from lucidlm.train import train
from lucidlm.train.metrics import MetricsLog
from lucidlm.train.schedule import learning_rate, time_progress

from ..conftest import tiny_config


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in MetricsLog(run_dir / "metrics.jsonl").read() if "loss" in r}


def test_a_small_model_learns_a_repeating_text(tmp_path):
    (tmp_path / "t.txt").write_text("the cat sat on the mat. " * 300)
    prepare([Source(tmp_path / "t.txt", "t")], tmp_path / "data", progress=False)
    config = tiny_config(11, max_steps=150, batch_size=8, lr=1e-2, min_lr=1e-3, eval_interval=50)
    result = train(tmp_path / "data", tmp_path / "run", config, progress=False)
    assert losses(tmp_path / "run")[150] < 0.1
    assert result.val_loss < 0.1 and result.step == 150 and not result.interrupted
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_round_trip_gives_identical_logits(tmp_path, data_dir):
    config = tiny_config(34)
    result = train(data_dir, tmp_path / "run", config, progress=False)
    model, tokenizer, loaded_config = load_model(tmp_path / "run", which="latest")
    assert loaded_config.model == config.model
    assert tokenizer.decode(tokenizer.encode("Speak, speak.")) == "Speak, speak."
    x = torch.tensor([tokenizer.encode("First Citizen:")])
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], result.model(x)[0], rtol=0, atol=0)
    manifest = json.loads((tmp_path / "run" / "latest.json").read_text())
    assert manifest["step"] == 20 and manifest["checkpoint"] == "checkpoints/step-0000020"
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["step-0000020"]


def test_resume_continues_exactly(tmp_path, data_dir):
    straight = tiny_config(34, max_steps=20, eval_interval=5)
    straight.model.dropout = 0.1  # dropout draws random numbers: the RNG state must be restored too
    train(data_dir, tmp_path / "straight", straight, progress=False)
    first_half = tiny_config(34, max_steps=10, decay_steps=20, eval_interval=5)
    first_half.model.dropout = 0.1
    train(data_dir, tmp_path / "resumed", first_half, progress=False)
    second_half = tiny_config(34, max_steps=20, decay_steps=20, eval_interval=5)
    second_half.model.dropout = 0.1
    train(data_dir, tmp_path / "resumed", second_half, resume=True, progress=False)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(b) == list(range(1, 21))  # each step logged once
    assert abs(a[20] - b[20]) < 1e-6 and abs(a[11] - b[11]) < 1e-6
    x = torch.tensor([[1, 2, 3, 4]])
    m1, m2 = load_model(tmp_path / "straight", "latest")[0], load_model(tmp_path / "resumed", "latest")[0]
    torch.testing.assert_close(m1(x)[0], m2(x)[0], rtol=0, atol=1e-6)


def test_a_crash_before_the_manifest_leaves_the_previous_checkpoint(tmp_path, data_dir, monkeypatch):
    train(data_dir, tmp_path / "run", tiny_config(34, max_steps=10), progress=False)
    real_write = checkpoint_module.write_json_atomic

    def crash_on_manifest(path, data):
        if path.name == "latest.json":
            raise OSError("simulated crash between the weights and the manifest")
        real_write(path, data)

    monkeypatch.setattr(checkpoint_module, "write_json_atomic", crash_on_manifest)
    with pytest.raises(CheckpointError, match="simulated crash.*the checkpoint of step 10 is intact"):
        train(data_dir, tmp_path / "run", tiny_config(34, max_steps=20), resume=True, progress=False)
    assert (tmp_path / "run" / "checkpoints" / "step-0000020" / "model.safetensors").exists()
    assert find_checkpoint(tmp_path / "run", "latest").name == "step-0000010"
    assert load_model(tmp_path / "run", "latest")[0].config.n_layer == 2
    monkeypatch.undo()
    result = train(data_dir, tmp_path / "run", tiny_config(34, max_steps=20), resume=True, progress=False)
    assert result.step == 20
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["step-0000020"]


def test_damaged_or_missing_checkpoints_are_clear_errors(tmp_path, data_dir):
    train(data_dir, tmp_path / "run", tiny_config(34, max_steps=10), progress=False)
    weights = tmp_path / "run" / "checkpoints" / "step-0000010" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match best.json"):
        load_model(tmp_path / "run")
    with pytest.raises(CheckpointError, match="holds no latest checkpoint"):
        find_checkpoint(data_dir)
    with pytest.raises(CheckpointError, match="is not a directory"):
        find_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="already holds a run; add --resume"):
        train(data_dir, tmp_path / "run", tiny_config(34, max_steps=10), progress=False)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_that_resumes(tmp_path, text_file, signum, status):
    """SIGTERM (kill, systemd, Docker, CI) gets what Ctrl-C gets, with its own exit status (issue 37)."""
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "lucidlm",
        "train",
        "--data",
        str(text_file),
        "--out",
        str(run),
        "--set",
        "n_layer=1",
        "--set",
        "n_embd=16",
        "--set",
        "n_head=2",
        "--set",
        "block_size=8",
        "--max-steps",
        "1000000",
        "--set",
        "eval_interval=1000000",
        "--device",
        "cpu",
        "--no-progress",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 5):
        time.sleep(0.1)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == status, err  # as Ctrl-C anywhere: `train && generate` does not go on
    assert "Resume with" in out and "--resume" in out
    step = json.loads((run / "latest.json").read_text())["step"]
    assert step >= 5
    resumed = subprocess.run(
        [*command[:-5], "--max-steps", str(step + 3), "--resume", "--device", "cpu", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "latest.json").read_text())["step"] == step + 3


def test_sigterm_before_the_first_checkpoint_of_a_forced_run_puts_the_earlier_run_back(tmp_path, text_file):
    """Issue 37: SIGTERM during `train --force` exited 143 and left the earlier run under `.run.lucidlm-old-*`,
    with `run` holding a run without a checkpoint."""
    run = tmp_path / "run"
    tiny = ["--set", "n_layer=1", "--set", "n_embd=16", "--set", "n_head=2", "--set", "block_size=8"]
    train_args = [sys.executable, "-m", "lucidlm", "train", "--out", str(run), *tiny, "--device", "cpu"]
    earlier = subprocess.run([*train_args, "--data", str(text_file), "--max-steps", "2", "--no-progress"], timeout=120)
    assert earlier.returncode == 0
    before = {path.name: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    big = tmp_path / "big.txt"  # preparing it inside the new run takes seconds: the signal lands then
    big.write_text(text_file.read_text() * (20_000_000 // len(text_file.read_text())))
    process = subprocess.Popen(
        [*train_args, "--data", str(big), "--max-steps", "2", "--force"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".run.lucidlm-old-*")):
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and "lucidlm train: terminated" in err, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["big.txt", "run", text_file.name]
    assert {path.name: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before


def test_learning_rate_schedule():
    config = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=9, max_steps=109)
    assert learning_rate(0, 0.0, config) == pytest.approx(0.1)
    assert learning_rate(8, 0.0, config) == pytest.approx(0.9)
    assert learning_rate(9, 0.0, config) == pytest.approx(1.0)
    assert learning_rate(59, 0.0, config) == pytest.approx(0.55)  # halfway down the cosine
    assert learning_rate(109, 0.0, config) == pytest.approx(0.1)
    timed = TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=10**6, time_budget=100.0)
    assert learning_rate(10, 50.0, timed) == pytest.approx(0.5)  # the clock, not the step count, sets progress
    assert learning_rate(10, 150.0, timed) == pytest.approx(0.0)


def test_min_steps_holds_a_slow_machines_run_to_its_steps_and_leaves_a_fast_one_to_the_clock(tmp_path, data_dir):
    config = TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=10**6, time_budget=100.0, min_steps=1000)
    assert time_progress(100, 50.0, config) == pytest.approx(0.1)  # slow: 100 of 1000 steps in half the budget
    assert learning_rate(100, 50.0, config) == pytest.approx(0.5 * (1 + math.cos(0.1 * math.pi)))
    assert time_progress(800, 150.0, config) == pytest.approx(0.8)  # past the budget, still short of the steps
    assert time_progress(5000, 50.0, config) == pytest.approx(0.5)  # fast: the clock sets the pace
    assert time_progress(10, 50.0, TrainConfig(time_budget=100.0)) == pytest.approx(0.5)
    budgeted = tiny_config(34, max_steps=100, time_budget=1e-3, eval_interval=1000)
    assert train(data_dir, tmp_path / "clock", budgeted, progress=False).step == 1  # one step spends the budget
    held = tiny_config(34, max_steps=100, time_budget=1e-3, eval_interval=1000, min_steps=7)
    assert train(data_dir, tmp_path / "held", held, progress=False).step == 7
    with pytest.raises(ConfigError, match="min_steps makes a time budget train at least that many steps"):
        TrainConfig(min_steps=5)


def test_split_loss_scores_every_token_once_with_its_context(tmp_path, data_dir):
    train(data_dir, tmp_path / "run", tiny_config(34, max_steps=5), progress=False)
    model, _, _ = load_model(tmp_path / "run")
    tokens = np.asarray(open_split(data_dir, "val"))[:53]  # 52 targets: 3 full windows of 16 and a partial one
    loss, count = split_loss(model, tokens, batch_size=2)
    assert count == 52
    expected = []
    with torch.no_grad():
        for target in range(1, 53):
            window_start = (target - 1) // 16 * 16 if target <= 48 else 52 - 16
            context = torch.tensor(tokens[window_start:target].astype(np.int64))[None]
            logits, _ = model(context)
            expected.append(-torch.log_softmax(logits[0, -1], -1)[int(tokens[target])].item())
    assert loss == pytest.approx(sum(expected) / 52, rel=1e-5)
    assert not math.isnan(loss)


def test_numpy_backend_trains_resumes_exactly_and_its_checkpoint_samples_in_pytorch(tmp_path, data_dir):
    straight = tiny_config(34, max_steps=12, eval_interval=6, backend="numpy")
    result = train(data_dir, tmp_path / "straight", straight, progress=False)
    assert losses(tmp_path / "straight")[12] < losses(tmp_path / "straight")[1]
    train(data_dir, tmp_path / "resumed", tiny_config(34, max_steps=6, decay_steps=12, backend="numpy"), progress=False)
    train(
        data_dir,
        tmp_path / "resumed",
        tiny_config(34, max_steps=12, decay_steps=12, backend="numpy"),
        resume=True,
        progress=False,
    )
    assert abs(losses(tmp_path / "straight")[12] - losses(tmp_path / "resumed")[12]) < 1e-6
    model, _, _ = load_model(tmp_path / "straight", "latest")  # the PyTorch GPT reads the NumPy weights
    x = np.array([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(torch_logits, result.model.forward(x)[0], rtol=1e-4, atol=1e-5)


def test_numpy_backend_refuses_what_it_does_not_implement(tmp_path, data_dir):
    from lucidlm.errors import ConfigError

    config = tiny_config(34, backend="numpy")
    config.model.mlp = "swiglu"
    with pytest.raises(ConfigError, match="the NumPy backend does not support mlp='swiglu'"):
        train(data_dir, tmp_path / "run", config, progress=False)


def test_sighup_stops_training_as_sigterm_does_with_status_129(monkeypatch):
    """The terminal closing (SIGHUP) asks the loop to stop and save, as SIGTERM does; a second one ends it, and
    the command exits 128 + 1."""
    import os

    from lucidlm import cli
    from lucidlm.errors import Terminated
    from lucidlm.train.trainer import StopRequest

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGHUP)
        assert stop.signal == signal.SIGHUP  # the loop saves and stops after this step
        with pytest.raises(Terminated) as raised:
            os.kill(os.getpid(), signal.SIGHUP)
    assert raised.value.signum == signal.SIGHUP

    def hung_up(args):
        raise Terminated(signal.SIGHUP)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    monkeypatch.setattr("lucidlm.cli.lessons.run", hung_up)
    try:
        assert cli.main(["lessons", "list"]) == 129
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
