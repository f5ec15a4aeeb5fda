"""The command line as a user meets it: real subprocesses, real files."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lucidlm import __version__

from ..conftest import run_lucidlm, tiny_model_args

lucidlm = run_lucidlm
TINY = tiny_model_args(eval_interval=50, eval_batches=2)


def test_prepare_train_generate_eval(tmp_path, text_file):
    prepared = lucidlm("data", "prepare", "--input", text_file, "--tokenizer", "word", "--out", tmp_path / "words")
    assert prepared.returncode == 0, prepared.stderr
    assert "2,412 train + 268 val tokens, word vocabulary of 30, stored as uint16" in prepared.stdout

    trained = lucidlm("train", "--data", text_file, "--out", tmp_path / "run", "--max-steps", 100, *TINY)
    assert trained.returncode == 0, trained.stderr
    assert "trained 100 steps" in trained.stdout and "lucidlm generate --checkpoint" in trained.stdout
    assert (tmp_path / "run" / "loss.png").exists()

    args = [
        "generate",
        "--checkpoint",
        tmp_path / "run",
        "--prompt",
        "All:",
        "--max-new-tokens",
        60,
        "--temperature",
        0.8,
        "--top-k",
        10,
        "--top-p",
        0.95,
        "--seed",
        1,
        "--num-samples",
        2,
    ]
    sampled = lucidlm(*args)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.count("--- sample") == 2 and sampled.stdout.count("All:") >= 2
    assert lucidlm(*args).stdout == sampled.stdout  # same seed, same text
    compiled = lucidlm(*args, "--compile")  # the compiled decoding step: the same text
    assert compiled.returncode == 0 and "compiles" in compiled.stderr, compiled.stderr
    assert compiled.stdout == sampled.stdout

    stopped = lucidlm(
        "generate",
        "--checkpoint",
        tmp_path / "run",
        "--prompt",
        "All:",
        "--temperature",
        0,
        "--stop",
        "\n\n",
        "--max-new-tokens",
        200,
        "--no-stream",
    )
    assert stopped.returncode == 0 and "\n\n" not in stopped.stdout.rstrip("\n")

    evaluated = lucidlm("eval", "--checkpoint", tmp_path / "run", "--data", tmp_path / "run" / "data", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["tokens"] == 699 and 0 < result["loss"] < 3.5 and result["checkpoint_step"] == 100


BAD_INPUTS = {
    "missing file": (["train", "--data", "{tmp}/nope.txt", "--out", "{tmp}/r"], "no such file or directory"),
    "empty file": (["train", "--data", "{tmp}/empty.txt", "--out", "{tmp}/r"], "empty.txt is empty"),
    "not utf-8": (["train", "--data", "{tmp}/latin1.txt", "--out", "{tmp}/r"], "not UTF-8 text: invalid byte 0xe9"),
    "shorter than a block": (["train", "--data", "{tmp}/short.txt", "--out", "{tmp}/r"], "fewer than block_size \\+ 1"),
    "unknown preset": (["train", "--data", "{text}", "--out", "{tmp}/r", "--preset", "gpt5"], "unknown preset"),
    "bad --set key": (
        ["train", "--data", "{text}", "--out", "{tmp}/r", "--set", "layers=2"],
        "--set layers: unknown setting",
    ),
    "numpy backend (by its former flag, --engine), swiglu": (
        ["train", "--data", "{text}", "--out", "{tmp}/r", "--engine", "numpy", "--set", "mlp=swiglu"],
        "the NumPy backend does not support .*mlp='swiglu'.*nanogpt-baby preset",
    ),
    "not a checkpoint": (["generate", "--checkpoint", "{tmp}"], "holds no latest checkpoint|not a run directory"),
    "missing checkpoint": (["eval", "--checkpoint", "{tmp}/none", "--data", "{text}"], "not a run directory"),
    "serve, not a checkpoint": (["serve", "--checkpoint", "{tmp}"], "holds no latest checkpoint|not a run directory"),
    "tutorial, no time": (["tutorial", "--time-limit", "0", "--no-browser"], "--time-limit must be a finite number"),
    "prepare nothing": (
        ["data", "prepare", "--input", "{tmp}/nope*.txt", "--out", "{tmp}/d"],
        "no such file or directory",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(tmp_path, text_file, case):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("Hamlet, prince de Danemark, été".encode("latin-1"))
    (tmp_path / "short.txt").write_text("To be, or not to be.\n" * 3)
    args, message = BAD_INPUTS[case]
    result = lucidlm(*[a.format(tmp=tmp_path, text=text_file) for a in args])
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("lucidlm ")
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "r" / "latest.json").exists()


def test_help_shows_examples():
    for command in (["train"], ["generate"], ["eval"], ["data", "prepare"], ["serve"], ["tutorial"]):
        result = lucidlm(*command, "--help")
        assert result.returncode == 0 and "examples:" in result.stdout


def test_compiled_training_saves_a_checkpoint_that_samples(tmp_path, text_file):
    # torch.compile on the CPU (inductor, C++): slow to start, so one layer and a few steps.
    trained = lucidlm(
        "train",
        "--data",
        text_file,
        "--out",
        tmp_path / "run",
        "--max-steps",
        6,
        "--compile",
        *tiny_model_args(n_layer=1, eval_interval=3, eval_batches=1),
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["compile"] == "true"
    assert saved["compiled"]["blocks"] is True and saved["compiled"]["why"] == "compile=true was asked for"
    sampled = lucidlm("generate", "--checkpoint", tmp_path / "run", "--prompt", "All:", "--max-new-tokens", 5)
    assert sampled.returncode == 0 and sampled.stdout.startswith("All:")


def test_serve_answers_on_the_printed_address_and_refuses_a_busy_port(tmp_path, text_file):
    trained = lucidlm("train", "--data", text_file, "--out", tmp_path / "shakes", "--max-steps", 5, *TINY)
    assert trained.returncode == 0, trained.stderr
    command = [sys.executable, "-m", "lucidlm", "serve", "--checkpoint", str(tmp_path / "shakes"), "--port", "0"]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        first = server.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:(\d+))", first)
        assert url, first
        models = httpx.get(f"{url.group(1)}/v1/models", timeout=30).json()
        assert [m["id"] for m in models["data"]] == ["shakes"]
        body = dict(model="shakes", prompt="the", max_tokens=7)
        completion = httpx.post(f"{url.group(1)}/v1/completions", json=body, timeout=60).json()
        assert completion["usage"]["completion_tokens"] == 7  # decoded by the engine's own process
        engine_pids = children(server.pid)
        assert len(engine_pids) >= 1
        busy = lucidlm("serve", "--checkpoint", tmp_path / "shakes", "--port", url.group(2))
        assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{url.group(2)}" in busy.stderr
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C: the whole process group gets it
        server.wait(timeout=30)
    assert "Traceback" not in server.stderr.read()
    for pid in engine_pids:  # the server's children (the engine, multiprocessing's resource tracker) end with it
        assert ended_within(pid, seconds=10)


def ended_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` is gone (or a zombie) within `seconds`: a child may still be finishing its exit
    when its parent has already gone."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def children(pid: int) -> list[int]:
    return [int(p) for task in Path(f"/proc/{pid}/task").iterdir() for p in (task / "children").read_text().split()]


def test_the_command_line_starts_without_waiting_for_pytorch():
    """Issue 33: `lucidlm --help` took 2.6-3.0 s (PyTorch was imported before the arguments were read), and
    `lucidlm --version` was an error."""
    code = "import sys\nfrom lucidlm.cli import build_parser\nbuild_parser()\nprint('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"
    version = subprocess.run([sys.executable, "-m", "lucidlm", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout == f"lucidlm {__version__}\n"


def test_the_gpu_check_without_a_gpu_stops_with_one_line():
    """`make gpu-check` asked for on a machine without CUDA fails loudly (exit 2, one line), and never skips."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu-check: this PyTorch sees no CUDA GPU; run it on a machine with an NVIDIA GPU"


def test_lens_reads_a_trained_run_and_refuses_bad_requests_in_one_line(tmp_path, text_file):
    trained = lucidlm("train", "--data", text_file, "--out", tmp_path / "run", "--max-steps", 3, *TINY)
    assert trained.returncode == 0, trained.stderr
    run = ["lens", "--checkpoint", tmp_path / "run", "--device", "cpu"]
    lens = lucidlm(*run[:1], "logit", *run[1:], "--prompt", "First Citizen", "--json")
    assert lens.returncode == 0, lens.stderr
    result = json.loads(lens.stdout)
    assert result["layers"] == ["embeddings", "layer 0", "layer 1"] and result["prediction_rank"][-1] == [0] * 13
    heads = lucidlm(*run[:1], "heads", *run[1:], "--length", 8, "--png", tmp_path / "heads.png")
    assert heads.returncode == 0 and "the strongest induction heads (layer.head)" in heads.stdout
    assert (tmp_path / "heads.png").read_bytes()[:4] == b"\x89PNG"
    table = lucidlm(*run[:1], "attribute", *run[1:], "--prompt", "First Citizen", "--token", "n", "--other", "z")
    assert table.returncode == 0 and "the logit difference: " in table.stdout
    for extra, message in [
        (["logit"], "lens logit needs --prompt"),
        (["attribute", "--prompt", "First", "--token", "Fi"], "--token 'Fi' is 2 tokens; give a text that is one"),
        (["patch", "--clean", "Fir", "--corrupted", "Fi", "--answer", "s", "--wrong", "t"], "must be of equal length"),
        (["heads", "--length", "99"], r"length must lie in 2\.\.16"),
    ]:
        refused = lucidlm(*run[:1], extra[0], *run[1:], *extra[1:])
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert re.search(message, refused.stderr), refused.stderr


def test_lens_writes_its_picture_by_the_rule_every_output_follows(tmp_path, text_file, capsys):
    """--png goes through outputs.py: a directory, a device, a user's file are refused; an earlier picture only
    with --force (issue 47). In this process, but for the first refusal: one line, exit 2."""
    from lucidlm.cli import build_parser
    from lucidlm.cli.lens import run as run_lens
    from lucidlm.errors import ConfigError

    trained = lucidlm("train", "--data", text_file, "--out", tmp_path / "run", "--max-steps", 3, *TINY)
    assert trained.returncode == 0, trained.stderr
    logit = ["lens", "logit", "--checkpoint", str(tmp_path / "run"), "--device", "cpu", "--prompt", "First"]

    def lens(*extra) -> None:
        run_lens(build_parser().parse_args([*logit, *map(str, extra)]))

    (tmp_path / "notes.txt").write_text("mine")
    refused = lucidlm(*logit, "--png", tmp_path / "notes.txt", "--force")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "exists and is not a PNG picture; choose another --png" in refused.stderr
    for target, message in [
        (tmp_path, "is a directory; give --png a file name"),
        ("/dev/full", "/dev/full exists and is not a PNG picture"),
        (tmp_path / "notes.txt/x.png", "is a file, not a directory"),
        ("", "is a directory; give --png a file name"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            lens("--png", target, "--force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run", text_file.name]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    lens("--png", tmp_path / "pictures" / "lens")
    assert (tmp_path / "pictures" / "lens").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="already holds a PNG picture; pass --force to replace it"):
        lens("--png", tmp_path / "pictures" / "lens")
    lens("--png", tmp_path / "pictures" / "lens", "--force")
    assert [p.name for p in (tmp_path / "pictures").iterdir()] == ["lens"]  # no temporary left
    for top in (0, -3):
        with pytest.raises(ConfigError, match="top must be at least 1"):
            lens("--top", top)
    attribute = ["lens", "attribute", "--checkpoint", str(tmp_path / "run"), "--prompt", "Fi", "--token", "n"]
    with pytest.raises(ConfigError, match="lens attribute has no picture; drop --png"):
        run_lens(build_parser().parse_args([*attribute, "--png", str(tmp_path / "a.png")]))
    capsys.readouterr()
