"""Training faults: kill -9 at random moments, failing writes, NaN losses. Nothing lost, nothing half-written
accepted. `make soak` runs many more kill trials (LUCIDLM_KILL_TRIALS)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from lucidlm import runs as checkpoint_module
from lucidlm.cli import main
from lucidlm.errors import CheckpointError
from lucidlm.inputs import sha256_file
from lucidlm.load import load_model
from lucidlm.train import train

from ..conftest import run_lucidlm, tiny_config, tiny_model_args

KILL_TRIALS = int(os.environ.get("LUCIDLM_KILL_TRIALS", "3"))
STEPS = 40


def assert_manifest_names_a_complete_checkpoint(run_dir):
    manifest = json.loads((run_dir / "latest.json").read_text())
    directory = run_dir / manifest["checkpoint"]
    for name, expected in manifest["files"].items():
        assert (directory / name).stat().st_size == expected["bytes"]
        assert sha256_file(directory / name) == expected["sha256"]
    load_model(run_dir, "latest")
    return manifest["step"]


@pytest.mark.parametrize("trial", range(KILL_TRIALS))
def test_kill_9_at_a_random_moment_then_resume_finishes(tmp_path, text_file, trial):
    """Checkpoints every 2 steps, so many kills land inside a save."""
    run_dir = tmp_path / "run"
    args = ["train", "--data", text_file, "--out", run_dir, "--max-steps", STEPS, "--no-progress"]
    args += tiny_model_args(eval_interval=2, eval_batches=1)
    command = [sys.executable, "-m", "lucidlm", *map(str, args)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run_dir / "latest.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(trial).uniform(0.0, 1.5))  # somewhere in the run, in a save or between saves
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = assert_manifest_names_a_complete_checkpoint(run_dir)
    resumed = run_lucidlm(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert assert_manifest_names_a_complete_checkpoint(run_dir) == STEPS >= killed_at


def test_a_failing_write_keeps_the_previous_checkpoint(tmp_path, data_dir, monkeypatch):
    """A full disk (ENOSPC on the weights of the second save): a clear error, the first checkpoint intact."""
    train(data_dir, tmp_path / "run", tiny_config(34, max_steps=10), progress=False)
    before = (tmp_path / "run" / "latest.json").read_text()

    def disk_full(tensors, path, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full)
    with pytest.raises(CheckpointError, match=r"No space left on device\); the checkpoint of step 10 is intact"):
        train(data_dir, tmp_path / "run", tiny_config(34, max_steps=20), resume=True, progress=False)
    assert (tmp_path / "run" / "latest.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-0000010"]
    monkeypatch.undo()
    assert train(data_dir, tmp_path / "run", tiny_config(34, max_steps=20), resume=True, progress=False).step == 20


def test_a_failing_first_checkpoint_does_not_advise_resuming_a_run_that_is_removed(
    tmp_path, text_file, monkeypatch, capsys
):
    """Issue 37: a full disk at the first save said "then --resume", for a run the same error then removed."""

    def disk_full(tensors, path, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full)
    args = ["train", "--data", str(text_file), "--out", str(tmp_path / "run"), *tiny_model_args(), "--max-steps", "2"]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the run had no checkpoint yet, so nothing is kept" in err and "--resume" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_read_only_output_is_one_line_and_exit_2(tmp_path, text_file):
    """The output path is a file where a directory should be: no traceback, nothing written."""
    (tmp_path / "taken").write_text("not a directory")
    result = run_lucidlm("train", "--data", text_file, "--out", tmp_path / "taken" / "run", *tiny_model_args())
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_nan_loss_stops_with_the_step_and_the_last_good_checkpoint(tmp_path, data_dir):
    train(data_dir, tmp_path / "run", tiny_config(34, max_steps=10), progress=False)
    with pytest.raises(
        Exception, match=r"the loss became (nan|inf) at step 1[12]; the last good checkpoint is step 10"
    ):
        train(data_dir, tmp_path / "run", tiny_config(34, max_steps=20, lr=1e30), resume=True, progress=False)
