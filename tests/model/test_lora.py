"""LoRA: the adapters' gradients are those of the merged weight, training leaves the base as it was, merging
gives W + (alpha / r) B A, and a LoRA run resumes exactly and loads as base + adapters everywhere."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lucidlm.load import load_model
from lucidlm.model import GPT, GPTConfig
from lucidlm.model.lora import LoRALinear, add_lora, merge_lora
from lucidlm.run_config import RunConfig, TrainConfig
from lucidlm.train.plan import carry_out, plan_run
from tests.conftest import run_lucidlm, tiny_model_args


def lora_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True))
    add_lora(model, rank=4, alpha=8.0, targets="attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj")
    for module in model.modules():  # B starts at zero; give it values so that every gradient is exercised
        if isinstance(module, LoRALinear):
            torch.nn.init.normal_(module.lora_B, std=0.1)
    return model


def test_the_adapters_gradients_are_those_of_the_merged_weight():
    model = lora_model()
    x = torch.randint(0, 20, (3, 8))
    y = torch.randint(0, 20, (3, 8))
    _, loss = model(x, y)
    loss.backward()
    layer = model.transformer.h[1].mlp.c_fc
    # the same loss through W' = W + s B A computed by autograd
    A = layer.lora_A.detach().clone().requires_grad_(True)
    B = layer.lora_B.detach().clone().requires_grad_(True)
    original = layer.forward

    def merged_forward(h):
        return torch.nn.functional.linear(h, layer.weight + layer.scale * B @ A, layer.bias)

    layer.forward = merged_forward
    _, reference = model(x, y)
    reference.backward()
    layer.forward = original
    torch.testing.assert_close(layer.lora_A.grad, A.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(layer.lora_B.grad, B.grad, rtol=1e-5, atol=1e-7)
    assert layer.weight.grad is None  # the base is frozen


def test_merging_gives_the_base_weight_plus_scaled_b_a_and_the_same_outputs():
    model = lora_model()
    layer = model.transformer.h[0].attn.c_attn
    expected = layer.weight.detach() + (8.0 / 4) * layer.lora_B.detach() @ layer.lora_A.detach()
    x = torch.randint(0, 20, (2, 8))
    with torch.no_grad():
        before = model(x)[0]
    merge_lora(model)
    assert type(model.transformer.h[0].attn.c_attn) is torch.nn.Linear
    torch.testing.assert_close(model.transformer.h[0].attn.c_attn.weight.detach(), expected)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], before, rtol=1e-5, atol=1e-5)
    assert not any("lora" in name for name in model.state_dict())


@pytest.fixture
def base_run(tmp_path, text_file):
    out = tmp_path / "base"
    result = run_lucidlm("train", "--data", text_file, "--out", out, "--max-steps", "20",
                         *tiny_model_args(), "--no-progress", "--set", "eval_interval=10")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_lora_training_leaves_the_base_unchanged_and_resumes_exactly(tmp_path, text_file, base_run):
    base, _, _ = load_model(base_run)
    settings = [
        "lora_rank=4",
        "lora_alpha=8",
        "eval_interval=5",
        "device=cpu",
        "warmup_steps=2",
        "decay_steps=10",
        "time_budget=none",
    ]
    whole = plan_run(text_file, tmp_path / "whole", init_from=str(base_run), overrides=[*settings, "max_steps=10"])
    carry_out(whole, progress=False)
    half = plan_run(text_file, tmp_path / "half", init_from=str(base_run), overrides=[*settings, "max_steps=5"])
    carry_out(half, progress=False)
    resumed = plan_run(text_file, tmp_path / "half", overrides=["max_steps=10"], resume=True)
    carry_out(resumed, progress=False)
    latest = {run: json.loads((tmp_path / run / "latest.json").read_text()) for run in ("whole", "half")}
    tensors = {run: load_file(tmp_path / run / latest[run]["checkpoint"] / "model.safetensors") for run in latest}
    # the checkpoint holds the adapters only, and the resumed run's equal the uninterrupted run's exactly
    assert tensors["whole"] and all("lora_" in name for name in tensors["whole"])
    for name, tensor in tensors["whole"].items():
        torch.testing.assert_close(tensors["half"][name], tensor, rtol=0, atol=0)
    # loaded, the run is the base with the adapters merged; the base run's own weights are as they were
    tuned, _, config = load_model(tmp_path / "whole", "latest")
    assert config.init_from == str(base_run.resolve())
    reloaded_base, _, _ = load_model(base_run)
    for name, tensor in base.state_dict().items():
        torch.testing.assert_close(reloaded_base.state_dict()[name], tensor, rtol=0, atol=0)
    layer = "transformer.h.1.attn.c_attn"
    scale = 8 / 4
    merged = (
        base.state_dict()[f"{layer}.weight"]
        + scale * tensors["whole"][f"{layer}.lora_B"] @ tensors["whole"][f"{layer}.lora_A"]
    )
    torch.testing.assert_close(tuned.state_dict()[f"{layer}.weight"], merged)
    assert not torch.equal(tuned.state_dict()[f"{layer}.weight"], base.state_dict()[f"{layer}.weight"])


def test_lora_exports_merged_and_needs_its_base(tmp_path, text_file, base_run):
    result = run_lucidlm("train", "--init-from", base_run, "--data", text_file, "--out",
                         tmp_path / "lora", "--max-steps", "4", "--set", "lora_rank=2", "--device", "cpu",
                         "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    tuned, _, _ = load_model(tmp_path / "lora", "latest")
    exported = run_lucidlm("export", "--checkpoint", tmp_path / "lora", "--which", "latest", "--out", tmp_path / "hf")
    assert exported.returncode == 0, exported.stderr
    hf = load_file(tmp_path / "hf" / "model.safetensors")
    assert not any("lora" in name for name in hf)
    back, _, _ = load_model(f"hf:{tmp_path / 'hf'}")
    x = torch.randint(0, tuned.config.vocab_size, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], tuned(x)[0], rtol=1e-5, atol=1e-5)
    # without its base, a LoRA run says what it needs
    (base_run / "best.json").rename(base_run / "moved.json")
    (base_run / "latest.json").rename(base_run / "moved-latest.json")
    failed = run_lucidlm("generate", "--checkpoint", tmp_path / "lora", "--max-new-tokens", "3")
    assert failed.returncode == 2
    assert "needs its base model" in failed.stderr and "Traceback" not in failed.stderr


def test_lora_needs_a_model_to_adapt(tmp_path, text_file):
    result = run_lucidlm("train", "--data", text_file, "--out", tmp_path / "r", "--set", "lora_rank=4")
    assert result.returncode == 2
    assert "LoRA adapts a trained model: add --init-from" in result.stderr
    bad = RunConfig(train=TrainConfig(lora_rank=4))
    assert bad.train.lora_targets.startswith("attn")
    with pytest.raises(Exception, match="lora_targets='mlp.up': choose among"):
        TrainConfig(lora_rank=4, lora_targets="mlp.up")
