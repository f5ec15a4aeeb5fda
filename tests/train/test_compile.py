"""Compiled training (device.training_compile, GPT.compile_blocks): when it compiles, and that it trains as eager."""

import json

import pytest
import torch

from lucidlm.device import training_compile
from lucidlm.errors import ConfigError
from lucidlm.run_config import TrainConfig
from lucidlm.train import train

from ..conftest import tiny_config
from .test_trainer import losses

CPU = torch.device("cpu")


def test_auto_compiles_long_runs_where_a_compiler_is(monkeypatch):
    assert training_compile(CPU, "auto", 100_000, 120.0) == (
        True,
        "a run of up to 100000 steps or 120 s wins back the compile",
    )
    assert training_compile(CPU, "auto", 5000, None) == (True, "a run of up to 5000 steps wins back the compile")
    assert training_compile(CPU, "auto", 60, None) == (False, "a run of 60 steps does not win back a compile")
    assert training_compile(CPU, "auto", 100_000, 20.0)[0] is False
    assert training_compile(CPU, "false", 100_000, None) == (False, "compile=false was asked for")
    assert training_compile(CPU, "true", 10, None) == (True, "compile=true was asked for")
    assert training_compile(torch.device("mps"), "auto", 100_000, None) == (False, "torch.compile is not used on mps")
    monkeypatch.setattr("lucidlm.device.shutil.which", lambda name: None)
    missing = "compiling for the CPU needs a C++ compiler (g++ or clang++)"
    assert training_compile(CPU, "auto", 100_000, None) == (False, missing)
    with pytest.raises(
        ConfigError, match=r"needs a C\+\+ compiler \(g\+\+ or clang\+\+\); install it or set compile=false"
    ):
        training_compile(CPU, "true", 100_000, None)


def test_compile_takes_auto_true_false_and_the_booleans_of_older_runs():
    assert TrainConfig().compile == "auto"
    assert TrainConfig(compile=True).compile == "true" and TrainConfig(compile=False).compile == "false"
    with pytest.raises(ConfigError, match="compile 'yes' is not one of: auto, true, false"):
        TrainConfig(compile="yes")


def test_compiled_blocks_train_as_eager_ones_with_one_graph_for_all_blocks(tmp_path, data_dir):
    """Two layers, 12 steps, fp32: the compiled run's losses follow the eager run's (Inductor reorders float sums,
    so not bit for bit); both blocks call one compiled graph, and evaluation (no gradients) compiles nothing."""
    runs = {}
    for compile in ("false", "true"):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        config = tiny_config(34, max_steps=12, eval_interval=6, dtype="fp32", compile=compile)
        result = train(data_dir, tmp_path / compile, config, progress=False)
        runs[compile] = losses(tmp_path / compile)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert graphs == (1 if compile == "true" else 0)
        assert result.model.compiled_blocks is None  # the model handed back is the plain one
    saved = json.loads((tmp_path / "true" / "config.json").read_text())["compiled"]
    assert saved["blocks"] is True and saved["why"] == "compile=true was asked for"
    # the compile happens before the clock starts: the first step's time holds none of it
    first_step = json.loads((tmp_path / "true" / "metrics.jsonl").read_text().splitlines()[0])
    assert first_step["step"] == 1 and first_step["elapsed"] < saved["seconds"] / 2
    gaps = [abs(runs["true"][step] - runs["false"][step]) for step in range(1, 13)]
    assert max(gaps) < 1e-3, gaps
    assert runs["true"][12] < runs["true"][1] - 0.3


def test_the_compile_cache_lives_in_lucidlms_cache_unless_the_user_says_where(monkeypatch, tmp_path):
    from lucidlm.device import use_compile_cache
    from lucidlm.train.optim import make_optimizer

    monkeypatch.setenv("LUCIDLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("lucidlm.device.USERS_COMPILE_CACHE", None)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    config = tiny_config(34)
    make_optimizer(torch.nn.Linear(2, 2), config.train, "cpu")  # PyTorch writes its default into the environment
    assert use_compile_cache() == tmp_path / "cache" / "inductor"
    monkeypatch.setattr("lucidlm.device.USERS_COMPILE_CACHE", str(tmp_path / "mine"))
    assert use_compile_cache() == tmp_path / "mine"
