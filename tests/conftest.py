import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lucidlm.data import Source, prepare
from lucidlm.model import GPTConfig
from lucidlm.run_config import RunConfig, TrainConfig

# The suite runs on a 2-core CPU: keep PyTorch from oversubscribing it when pytest runs tests in parallel.
torch.set_num_threads(min(2, os.cpu_count() or 1))

SAMPLE_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
) * 40


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test touches the user's real cache directory."""
    monkeypatch.setenv("LUCIDLM_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "sample.txt"
    path.write_text(SAMPLE_TEXT)
    return path


@pytest.fixture
def data_dir(tmp_path, text_file) -> Path:
    out = tmp_path / "data"
    prepare([Source(text_file, "sample")], out, "char", progress=False)
    return out


def tiny_config(vocab_size: int, **train) -> RunConfig:
    model = GPTConfig(vocab_size=vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32)
    settings = dict(
        batch_size=4, max_steps=20, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_interval=10, eval_batches=2, device="cpu"
    )
    settings.update(train)
    return RunConfig(model, TrainConfig(**settings))


def run_lucidlm(*args, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    """`python -m lucidlm ARGS`, as a user runs it."""
    command = [sys.executable, "-m", "lucidlm", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def tiny_model_args(**settings) -> list[str]:
    """`--set` flags for a model small enough to train in seconds, on the CPU."""
    settings = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, **settings}
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")] + ["--device", "cpu"]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  # screenshots, for a person to look at


def require_chromium() -> None:
    """Skip the calling test module where Debian's chromium is missing (an error in CI, which installs it)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("LUCIDLM_REQUIRE_BROWSER"):
            raise RuntimeError("chromium is missing; .ci/run installs it with `apt-get install -y chromium`")
        pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture(scope="session")
def browser():
    """Playwright driving Debian's chromium (Playwright's own browser download does not work here); the tests
    that ask for it skip where chromium is missing, outside CI."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield launched
        launched.close()
