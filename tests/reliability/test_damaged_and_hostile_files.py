"""Issue 37, part 4: what hostile probes still turned into tracebacks or 500s. Every file lucidlm reads, damaged
or hostile, and every out-of-range number is one line naming the file or the setting, exit status 2, and
nothing written.

The commands run in this process through `lucidlm.cli.main`, as the command line runs them, with tiny models."""

import errno
import json
import shutil

import httpx
import numpy as np
import pytest

from lucidlm.cli import main
from lucidlm.data.prepare import write_array

from ..conftest import SAMPLE_TEXT, tiny_model_args

TINY = [*tiny_model_args(block_size=16, eval_interval=2, eval_batches=1, batch_size=2), "--no-progress"]
HUGE = "9" * 5000  # Python refuses to parse an integer of more than 4,300 digits, with a ValueError of its own
LONG = "9" * 4000  # parsed, but larger than any size or count


def lucidlm(capsys, *args) -> tuple[int, str]:
    """(exit status, stderr) of `lucidlm ARGS`; stderr must be one line when the status is 2."""
    status = main([str(a) for a in args])
    err = capsys.readouterr().err
    if status == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return status, err


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A text, its data directory, and a run of 4 steps (checkpoints at steps 2 and 4)."""
    root = tmp_path_factory.mktemp("made")
    (root / "text.txt").write_text(SAMPLE_TEXT)
    assert main(["data", "prepare", "--input", str(root / "text.txt"), "--out", str(root / "data")]) == 0
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--max-steps", "4", *TINY]) == 0
    return root


@pytest.fixture
def run(made, tmp_path):
    shutil.copytree(made / "run", tmp_path / "run")
    return tmp_path / "run"


def edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def latest_checkpoint(run):
    return run / json.loads((run / "latest.json").read_text())["checkpoint"]


# --- damaged run files: each one line naming the file and the field ---------------------------------------------

DAMAGES = {
    "state.json truncated": (
        lambda run: (latest_checkpoint(run) / "state.json").write_text('{"step": 4, "elap'),
        "state.json is missing or does not match latest.json; the checkpoint is damaged",  # its sha256, first
    ),
    "latest.json without step": (
        lambda run: edit_json(run / "latest.json", lambda data: data.pop("step")),
        "latest.json is damaged: step is missing",
    ),
    'latest.json with "step": "20"': (
        lambda run: edit_json(run / "latest.json", lambda data: data.update(step="20")),
        'latest.json is damaged: step must be a whole number of 0 or more, not "20"',
    ),
    "best.json with a file entry that is a number": (
        lambda run: edit_json(run / "best.json", lambda data: data["files"].update({"model.safetensors": 7})),
        "best.json is damaged: files.model.safetensors must be an object, not 7",
    ),
    "config.json with an integer of 5,000 digits": (
        lambda run: (run / "config.json").write_text('{"model": {"n_layer": ' + HUGE + "}}"),
        "config.json is damaged: not valid JSON for lucidlm (a number of more than 4,300 digits)",
    ),
    "config.json with n_layer of 4,000 digits": (
        lambda run: edit_json(run / "config.json", lambda data: data["model"].update(n_layer=int(LONG))),
        "n_layer=999999999999... (4000 digits) must be a positive integer of at most 2,147,483,647",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("command", ["generate", "resume"])
def test_a_damaged_run_file_is_one_line(made, run, capsys, damage, command):
    """Each was a KeyError, TypeError, JSONDecodeError or ValueError traceback."""
    do_damage, message = DAMAGES[damage]
    do_damage(run)
    if command == "generate":
        which = "best" if damage.startswith("best") else "latest"
        args = ["generate", "--checkpoint", run, "--which", which, "--max-new-tokens", 2]
    else:
        args = ["train", "--data", made / "data", "--out", run, "--max-steps", 6, "--resume"]
    status, err = lucidlm(capsys, *args)
    assert status == 2 and message in err, err


def test_a_half_written_checkpoint_named_as_checkpoint_is_one_line(run, capsys):
    partial = run / "checkpoints" / "step-0000006.tmp"
    shutil.copytree(latest_checkpoint(run), partial)
    status, err = lucidlm(capsys, "generate", "--checkpoint", partial, "--max-new-tokens", 2)
    assert status == 2 and "is not a complete checkpoint (one being written, or left by a killed run)" in err


# --- data, inputs and settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val"])
def test_token_ids_outside_the_vocabulary_are_refused_when_the_data_opens(made, tmp_path, capsys, split):
    """An IndexError inside the model, in eval and in train."""
    data = tmp_path / "data"
    shutil.copytree(made / "data", data)
    vocab_size = json.loads((data / "meta.json").read_text())["vocab_size"]
    tokens = np.fromfile(data / f"{split}.bin", dtype="<u2")
    tokens[3] = vocab_size + 5
    tokens.tofile(data / f"{split}.bin")
    message = f"{split}.bin holds token id {vocab_size + 5}, outside the vocabulary of {vocab_size}"
    status, err = lucidlm(capsys, "eval", "--checkpoint", made / "run", "--data", data, "--split", split)
    assert status == 2 and message in err
    status, err = lucidlm(capsys, "train", "--data", data, "--out", tmp_path / "new", "--max-steps", 2, *TINY)
    assert status == 2 and message in err and not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("batch_size=1000000000", "batch_size=1000000000 of 16 tokens needs about"),
        ("eval_batches=100000000", "eval_batches=100000000 would score 3,200,000,000 tokens at each evaluation"),
        (f"n_layer={LONG}", "must be a positive integer of at most 2,147,483,647"),
        (f"max_steps={HUGE}", "max_steps=9999999999999999999999999999999999999...: max_steps takes a int value"),
    ],
)
def test_training_memory_and_work_are_checked_before_anything_is_written(made, tmp_path, capsys, setting, message):
    """`batch_size=10**9` was numpy's "Unable to allocate 484. GiB"; `eval_batches=10**8` ran on past its
    budget; a 4,000-digit n_layer built layers on the meta device for ever."""
    out = tmp_path / "new"
    status, err = lucidlm(capsys, "train", "--data", made / "data", "--out", out, *TINY, "--set", setting)
    assert status == 2 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--config", "--tasks", "--chat", "--input"])
def test_a_device_given_as_a_file_is_read_within_a_bound(made, tmp_path, capsys, flag):
    """`/dev/zero` was read until memory ran out; `--input /dev/zero` was "no such file"."""
    if flag == "--config":
        args = ["train", "--data", made / "data", "--out", tmp_path / "new", "--config", "/dev/zero"]
        message = "/dev/zero is larger than 1 MiB, more than lucidlm reads here; give a TOML file"
    elif flag == "--tasks":
        args = ["eval", "--checkpoint", made / "run", "--tasks", "/dev/zero"]
        message = "/dev/zero is larger than 1024 MiB, more than lucidlm reads here"
    elif flag == "--chat":
        args = ["data", "prepare", "--chat", "/dev/zero", "--tokenizer-from", made / "run", "--out", tmp_path / "new"]
        message = "/dev/zero is larger than 1024 MiB, more than lucidlm reads here"
    else:
        args = ["data", "prepare", "--input", "/dev/zero", "--out", tmp_path / "new"]
        message = "/dev/zero is not a regular file (a device, a pipe or a socket)"
    status, err = lucidlm(capsys, *args)
    assert status == 2 and message in err, err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("flag", ["--tasks", "--chat", "--config"])
def test_an_integer_of_5000_digits_in_a_users_file_is_one_line(made, tmp_path, capsys, flag):
    if flag == "--config":
        path = tmp_path / "c.toml"
        path.write_text(f"n_layer = {HUGE}\n")
        args = ["train", "--data", made / "data", "--out", tmp_path / "new", "--config", path]
        message = "is not valid TOML: Exceeds the limit (4300 digits)"
    else:
        path = tmp_path / "records.jsonl"
        record = '{"messages": [{"role": "user", "content": "hi"}], "answer": "x", "n": ' + HUGE + "}"
        path.write_text(record + "\n")
        message = f"{path} line 1: not valid JSON for lucidlm (a number of more than 4,300 digits)"
        if flag == "--tasks":
            args = ["eval", "--checkpoint", made / "run", "--tasks", path]
        else:
            args = ["data", "prepare", "--chat", path, "--tokenizer-from", made / "run", "--out", tmp_path / "new"]
    status, err = lucidlm(capsys, *args)
    assert status == 2 and message in err, err


@pytest.mark.parametrize("command", ["serve", "tutorial"])
@pytest.mark.parametrize("port", ["70000", "-1", "99999999999999999999"])
def test_a_port_out_of_range_is_a_usage_error(made, capsys, command, port):
    """`--port 70000` was an OverflowError."""
    args = ["serve", "--checkpoint", str(made / "run")] if command == "serve" else ["tutorial", "--no-browser"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, f"--port={port}"])
    assert exit_.value.code == 2
    assert f"argument --port: {port} is not a port; give one from 1 to 65535" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["nan", "inf", "-1", "0"])
def test_every_tutorial_time_limit_is_a_finite_positive_number(capsys, limit):
    """`--time-limit nan` turned the limit off: `each cell: nan s`, and a 7 s sleep returned ok."""
    status, err = lucidlm(capsys, "tutorial", "--no-browser", "--time-limit", limit)
    assert status == 2 and "--time-limit must be a finite number of seconds above 0" in err


def test_a_full_disk_is_named_when_token_files_are_written():
    """numpy's tofile says "66818 requested and 0 written", which names no cause."""
    with pytest.raises(OSError) as error, open("/dev/full", "wb") as f:  # a device that is always full
        write_array(f, np.arange(100_000, dtype="<u2"))
    assert error.value.errno == errno.ENOSPC


# --- the server ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["seed", "max_tokens", "n", "temperature"])
@pytest.mark.parametrize("digits", [HUGE, LONG])
def test_an_integer_of_thousands_of_digits_in_a_request_is_a_400(server, field, digits):
    """A 500 where a 400 belongs, for `"seed": 999...9` and `"max_tokens": 999...9`."""
    url, _ = server
    body = '{"model": "tiny", "prompt": "To be", "max_tokens": 2, "' + field + '": ' + digits + "}"
    response = httpx.post(f"{url}/v1/completions", content=body, timeout=30)
    assert response.status_code == (422 if field == "temperature" and digits == LONG else 400), response.text
    assert len(response.json()["error"]["message"]) < 300  # the number is not echoed whole
    after = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "To be", "max_tokens": 2}, timeout=30)
    assert after.status_code == 200
