import pytest

from lucidlm.errors import ConfigError
from lucidlm.run_config import PRESETS, RunConfig, parse_overrides, resolve_config


def test_layers_preset_then_toml_then_set(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('lr = 0.005\n[model]\nn_layer = 3\npositions = "rope"\n[train]\nbatch_size = 7\n')
    config = resolve_config("nanogpt-baby", toml, ["n_layer=5", "train.grad_clip=0", "bias=true", "decay_steps=none"])
    assert config.model.n_layer == 5 and config.model.positions == "rope" and config.model.bias is True
    assert config.train.lr == 0.005 and config.train.batch_size == 7 and config.train.grad_clip == 0.0
    assert config.train.max_steps == 2000 and config.model.n_embd == 128  # untouched preset values
    assert config.train.decay_steps is None


def test_every_preset_resolves():
    for name in PRESETS:
        config = resolve_config(name)
        assert config.model.n_embd % config.model.n_head == 0
    llama = resolve_config("llama-tiny").model
    assert (llama.positions, llama.norm, llama.mlp, llama.bias, llama.n_kv_head) == (
        "rope",
        "rmsnorm",
        "swiglu",
        False,
        2,
    )


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["n_layers=3"], "--set n_layers: unknown setting; known: .*n_layer"),
        (["n_layer"], "is not key=value"),
        (["n_layer=three"], "n_layer takes a int value"),
        (["bias=maybe"], "bias takes a bool value"),
        (["train.n_layer=2"], "unknown setting"),
        (["positions=alibi"], "positions='alibi' is not one of"),
    ],
)
def test_bad_overrides(pairs, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("nanogpt-baby", overrides=pairs)


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'gpt5'; choose one of: nanogpt-baby"):
        resolve_config("gpt5")
    (tmp_path / "bad.toml").write_text("lr = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(None, tmp_path / "bad.toml")
    (tmp_path / "odd.toml").write_text("learning_rate = 1")
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        resolve_config(None, tmp_path / "odd.toml")


def test_parse_overrides_types():
    assert parse_overrides(["lr=3e-4", "model.dropout=0.2", "time_budget=60"]) == {
        "model": {"dropout": 0.2},
        "train": {"lr": 3e-4, "time_budget": 60.0},
    }


def test_the_former_name_engine_still_reads_as_backend(tmp_path):
    """Runs, TOML files and commands written when the training backend was called "engine" keep working."""
    saved = RunConfig().to_dict()
    del saved["train"]["backend"]
    saved["train"]["engine"] = "numpy"
    assert RunConfig.from_dict(saved).train.backend == "numpy"
    (tmp_path / "old.toml").write_text('[train]\nengine = "numpy"\n')
    assert resolve_config(config_file=tmp_path / "old.toml").train.backend == "numpy"
    assert resolve_config(overrides=["train.engine=numpy"]).train.backend == "numpy"


def test_the_training_settings_come_in_sections_and_a_section_may_name_one():
    """TrainConfig is its sections (batch, optimizer, schedule, lora, objective, runtime), each setting in one;
    `--set` takes a setting by itself or after its section's name, and no other section's."""
    from dataclasses import fields

    from lucidlm.run_config import TrainConfig

    sections = TrainConfig.sections()
    assert list(sections) == ["batch", "optimizer", "schedule", "lora", "objective", "runtime"]
    names = [name for section in sections.values() for name in section]
    assert sorted(names) == sorted(f.name for f in fields(TrainConfig)) and len(names) == len(set(names))
    assert "lr" in sections["optimizer"] and "warmup_steps" in sections["schedule"]
    assert parse_overrides(["optimizer.lr=3e-4", "schedule.warmup_steps=5"])["train"] == {"lr": 3e-4, "warmup_steps": 5}
    with pytest.raises(ConfigError, match="--set optimizer.warmup_steps: unknown setting"):
        parse_overrides(["optimizer.warmup_steps=5"])
