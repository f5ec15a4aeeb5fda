"""Training's precision (device.training_precision): bf16 autocast where the device does bf16 products fast."""

import json

import pytest
import torch

from lucidlm.device import cpu_bf16_flag, training_precision
from lucidlm.errors import ConfigError
from lucidlm.load import load_model
from lucidlm.train import train

from ..conftest import tiny_config
from .test_trainer import losses

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


def test_the_cpu_flags_decide_auto(tmp_path, monkeypatch):
    for text, flag in ((X86, "avx512_bf16"), (ARM, "bf16"), (OLD, None)):
        (tmp_path / "cpuinfo").write_text(text)
        assert cpu_bf16_flag.__wrapped__(tmp_path / "cpuinfo") == flag
    assert cpu_bf16_flag.__wrapped__(tmp_path / "missing") is None
    cpu = torch.device("cpu")
    monkeypatch.setattr("lucidlm.device.cpu_bf16_flag", lambda: "amx_bf16")
    assert training_precision(cpu) == ("bf16", "the CPU has bf16 units (amx_bf16)")
    assert training_precision(cpu, "fp32") == ("fp32", "dtype=fp32 was asked for")
    monkeypatch.setattr("lucidlm.device.cpu_bf16_flag", lambda: None)
    assert training_precision(cpu) == ("fp32", "the CPU reports no bf16 units (none of amx_bf16, avx512_bf16, bf16)")
    assert training_precision(cpu, "bf16")[0] == "bf16"
    assert training_precision(torch.device("mps")) == ("fp32", "mps trains in fp32")


def test_bad_dtypes_are_one_line_errors():
    with pytest.raises(ConfigError, match="dtype 'fp16' is not one of: auto, fp32, bf16"):
        tiny_config(34, dtype="fp16")
    with pytest.raises(ConfigError, match="the numpy backend computes in float32; drop dtype=bf16"):
        tiny_config(34, dtype="bf16", backend="numpy")


def test_bf16_training_follows_fp32_and_records_its_precision(tmp_path, data_dir):
    """200 steps on the same batches: the bf16 losses stay within 0.05 of fp32's at every logged step after the
    first 20 (and within 0.02 on average), without being the same numbers (autocast did run)."""
    runs = {}
    for dtype in ("fp32", "bf16"):
        config = tiny_config(34, max_steps=200, eval_interval=100, dtype=dtype)
        train(data_dir, tmp_path / dtype, config, progress=False)
        runs[dtype] = losses(tmp_path / dtype)
        recorded = json.loads((tmp_path / dtype / "config.json").read_text())["precision"]
        assert recorded == {"dtype": dtype, "why": f"dtype={dtype} was asked for"}
    gaps = [abs(runs["fp32"][s] - runs["bf16"][s]) for s in range(21, 201)]
    assert max(gaps) < 0.05 and sum(gaps) / len(gaps) < 0.02, (max(gaps), sum(gaps) / len(gaps))
    assert runs["fp32"] != runs["bf16"]
    assert runs["fp32"][200] < runs["fp32"][1] - 1.0  # both learned


def test_bf16_training_resumes_exactly(tmp_path, data_dir):
    straight = tiny_config(34, max_steps=20, eval_interval=5, dtype="bf16")
    train(data_dir, tmp_path / "straight", straight, progress=False)
    train(data_dir, tmp_path / "resumed", tiny_config(34, max_steps=10, decay_steps=20, dtype="bf16"), progress=False)
    second_half = tiny_config(34, max_steps=20, decay_steps=20, eval_interval=5, dtype="bf16")
    train(data_dir, tmp_path / "resumed", second_half, resume=True, progress=False)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert a[20] == b[20] and a[11] == b[11]
    x = torch.tensor([[1, 2, 3, 4]])
    m1, m2 = load_model(tmp_path / "straight", "latest")[0], load_model(tmp_path / "resumed", "latest")[0]
    torch.testing.assert_close(m1(x)[0], m2(x)[0], rtol=0, atol=0)


def test_bf16_attention_on_the_cpu_written_out_equals_flash_attention(monkeypatch):
    """Up to EXPLICIT_BF16_KEYS keys, bf16 attention on the CPU runs as two products and a float32 softmax
    (faster there than PyTorch's flash kernel); its output and gradients match the flash kernel's."""
    import lucidlm.model.kernels as kernels
    from lucidlm.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=64))
    ids = torch.randint(0, 40, (3, 32))
    results = {}
    for keys in (0, 512):  # 0: every length goes to flash attention
        monkeypatch.setattr(kernels, "EXPLICIT_BF16_KEYS", keys)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, loss = model(ids, ids)
        loss.backward()
        results[keys] = (logits.float(), model.transformer.h[0].attn.c_attn.weight.grad.clone())
    torch.testing.assert_close(results[512][0], results[0][0], atol=2e-2, rtol=0)
    torch.testing.assert_close(results[512][1], results[0][1], atol=2e-3, rtol=5e-2)
    assert not torch.equal(results[512][0], results[0][0])  # two paths, not one


def test_qk_norm_under_bf16_autocast_evaluates_without_a_dtype_warning():
    """Evaluation (no gradients) sends bf16 queries to QK-norm's fp32 gain: PyTorch warns and falls back to a slow
    path for mixed dtypes, so RMSNorm gives its kernel one dtype."""
    import warnings

    from lucidlm.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16, norm="rmsnorm", qk_norm=True))
    with warnings.catch_warnings(), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        warnings.simplefilter("error")
        _, loss = model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))
    assert torch.isfinite(loss)


def test_qk_norm_training_under_bf16_autocast_takes_the_written_out_attention(monkeypatch):
    """QK-norm's fp32 gain hands fp32 queries to attention even under bf16 autocast; its products still run in
    bf16 there, so the written-out path must be taken, not PyTorch's bf16 flash kernel (5 ms a backward call for
    the shakespeare-char preset, a third of its step)."""
    from lucidlm.model import GPT, GPTConfig

    def flash(*args, **kwargs):
        raise AssertionError("scaled_dot_product_attention was called")

    monkeypatch.setattr("lucidlm.model.gpt.F.scaled_dot_product_attention", flash)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16, norm="rmsnorm", qk_norm=True))
    ids = torch.zeros(2, 8, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(ids, ids)
    loss.backward()
    assert torch.isfinite(loss)
