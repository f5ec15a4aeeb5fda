import ctypes
import resource
from functools import partial

import numpy as np
import pytest
import torch

from lucidlm.errors import ConfigError
from lucidlm.model import GPT as TorchGPT
from lucidlm.model import GPTConfig
from lucidlm.scratch import AdamW, KVCache, NumpyGPT, clip_grad_norm, from_torch, to_torch
from lucidlm.scratch import layers as L
from lucidlm.scratch.gpt import rope_tables
from lucidlm.scratch.gradcheck import check_layer, relative_error

rng = np.random.default_rng(0)


def normal(*shape):
    return rng.normal(size=shape)


LAYERS = {
    "embedding": (L.embedding_forward, L.embedding_backward, rng.integers(0, 7, (2, 5)), normal(7, 4)),
    "linear": (L.linear_forward, L.linear_backward, normal(2, 3, 4), normal(5, 4), normal(5)),
    "linear without bias": (L.linear_forward, L.linear_backward, normal(2, 3, 4), normal(5, 4), None),
    "layernorm": (L.layernorm_forward, L.layernorm_backward, normal(2, 3, 6), normal(6), normal(6)),
    "layernorm without bias": (L.layernorm_forward, L.layernorm_backward, normal(2, 3, 6), normal(6), None),
    "gelu": (L.gelu_forward, L.gelu_backward, normal(3, 7)),
    "relu": (L.relu_forward, L.relu_backward, normal(3, 7) + 0.05),  # no value sits on the kink
    "rope": (
        partial(L.rope_forward, cos=rope_tables(5, 4, 100.0)[0], sin=rope_tables(5, 4, 100.0)[1]),
        L.rope_backward,
        normal(2, 3, 5, 4),
    ),
    "attention": (
        L.attention_forward,
        L.attention_backward,
        normal(2, 2, 5, 4),
        normal(2, 2, 5, 4),
        normal(2, 2, 5, 4),
    ),
    "crossentropy": (L.crossentropy_forward, L.crossentropy_backward, normal(2, 3, 6), rng.integers(0, 6, (2, 3))),
}


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_backward_matches_finite_differences(name):
    forward, backward, *inputs = LAYERS[name]
    errors = check_layer(forward, backward, *inputs)
    assert errors and max(errors) <= 1e-6, errors


CONFIGS = {
    "gpt2 (learned, gelu, no bias)": dict(),
    "rope, relu, bias": dict(positions="rope", mlp="relu", bias=True),
}


def twin_models(dtype, **overrides):
    config = GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16, **overrides)
    torch.manual_seed(0)
    torch_model = TorchGPT(config).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():  # make biases and gains non-trivial so their gradients are tested too
        for p in torch_model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return torch_model, from_torch(torch_model, dtype)


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-8), (np.float32, 1e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("switches", CONFIGS.values(), ids=list(CONFIGS))
def test_whole_model_equals_pytorch_autograd(dtype, tolerance, switches):
    torch_model, model = twin_models(dtype, **switches)
    idx, targets = rng.integers(0, 17, (3, 8)), rng.integers(0, 17, (3, 8))
    logits, loss = model.forward(idx, targets)
    grads = model.backward()
    torch_logits, torch_loss = torch_model(torch.from_numpy(idx), torch.from_numpy(targets))
    torch_loss.backward()
    assert relative_error(logits, torch_logits.detach().numpy()) <= tolerance
    assert abs(loss - torch_loss.item()) / torch_loss.item() <= tolerance
    torch_grads = {name: p.grad.numpy() for name, p in torch_model.named_parameters()}
    assert set(grads) == set(torch_grads)  # the tied head is one parameter in both
    for name, grad in grads.items():
        assert grad.dtype == dtype, name
        assert relative_error(grad, torch_grads[name]) <= tolerance, name


def test_one_adamw_step_and_clipping_equal_pytorch():
    torch_model, model = twin_models(np.float64, bias=True)
    idx, targets = rng.integers(0, 17, (2, 8)), rng.integers(0, 17, (2, 8))
    settings = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    optimizer = AdamW(model.params, **settings)
    params = list(torch_model.parameters())
    torch_optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=1e-2,
        betas=(0.9, 0.95),
    )
    for _ in range(2):
        model.forward(idx, targets)
        grads = model.backward()
        norm = clip_grad_norm(grads, 0.5)
        optimizer.step(grads)
        torch_optimizer.zero_grad()
        torch_model(torch.from_numpy(idx), torch.from_numpy(targets))[1].backward()
        torch_norm = torch.nn.utils.clip_grad_norm_(torch_model.parameters(), 0.5)
        torch_optimizer.step()
        assert norm == pytest.approx(torch_norm.item(), rel=1e-10)
    state = torch_model.state_for_saving()
    for name, value in model.params.items():
        assert relative_error(value, state[name].detach().numpy()) <= 1e-10, name


def test_numpy_training_learns_and_samples_the_same_text_in_pytorch():
    text = "the cat sat on the mat. " * 20
    vocab = sorted(set(text))
    ids = np.array([vocab.index(ch) for ch in text])
    model = NumpyGPT(GPTConfig(vocab_size=len(vocab), block_size=32, n_layer=2, n_head=2, n_embd=32), seed=1)
    optimizer = AdamW(model.params, lr=5e-3, betas=(0.9, 0.99), weight_decay=0.0)
    batch_rng = np.random.default_rng(0)
    losses = []
    for _ in range(300):
        starts = batch_rng.integers(0, len(ids) - 33, 8)
        x, y = np.stack([ids[s : s + 32] for s in starts]), np.stack([ids[s + 1 : s + 33] for s in starts])
        losses.append(model.forward(x, y)[1])
        optimizer.step(model.backward())
    assert np.mean(losses[-10:]) < 0.1
    prompt = [vocab.index(ch) for ch in "the c"]
    ours = model.generate(prompt, 30, temperature=0)
    theirs = []
    torch_model = to_torch(model)
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(30):
            logits, _ = torch_model(torch.tensor([tokens[-32:]]))
            tokens.append(int(logits[0, -1].argmax()))
            theirs.append(tokens[-1])
    assert ours == theirs
    assert "".join(vocab[i] for i in ours) == "at sat on the mat. the cat sat"


def test_unsupported_configurations_are_named():
    with pytest.raises(ConfigError, match="mlp='swiglu' \\(use gelu or relu\\); norm|norm='rmsnorm'"):
        NumpyGPT(GPTConfig(mlp="swiglu", norm="rmsnorm"))
    with pytest.raises(ConfigError, match="n_kv_head=1 .* --backend torch"):
        NumpyGPT(GPTConfig(n_kv_head=1))


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt"), reason="the C library has no mallopt")
def test_a_training_step_reuses_freed_memory_instead_of_faulting_it_in_again():
    """Without keep_freed_memory a nanogpt-baby step makes about 11,000 minor page faults (glibc hands the
    freed activations back to the kernel); with it, the step reuses them and makes next to none."""
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = NumpyGPT(config)  # the first GPT sets malloc's thresholds
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (12, 64)), rng.integers(0, 65, (12, 64))
    for _ in range(2):  # the heap grows to its peak once
        model.forward(x, y)
        model.backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        model.forward(x, y)
        model.backward()
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5 < 200


def test_the_twins_share_rope_tables_and_rotation():
    """The NumPy GPT's RoPE is the PyTorch GPT's: the same tables (the sign in sin's first half) and rotation."""
    from lucidlm.model.gpt import apply_rope
    from lucidlm.model.gpt import rope_tables as torch_rope_tables

    cos, sin = rope_tables(7, 8, 500.0)
    torch_cos, torch_sin = torch_rope_tables(7, 8, 500.0)
    np.testing.assert_allclose(cos, torch_cos.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(sin, torch_sin.numpy(), rtol=0, atol=1e-6)
    x = normal(2, 3, 7, 8)
    rotated, _ = L.rope_forward(x, cos, sin)
    np.testing.assert_allclose(rotated, apply_rope(torch.tensor(x), torch_cos.double(), torch_sin.double()), atol=1e-6)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_decoding_over_a_kv_cache_gives_the_recomputed_logits_and_tokens(positions):
    config = GPTConfig(vocab_size=20, block_size=12, n_layer=2, n_head=2, n_embd=16, positions=positions)
    model = NumpyGPT(config, dtype=np.float64, seed=3)
    tokens = [1, 5, 2, 7, 3, 3, 9, 4]
    whole, _ = model.forward(np.array([tokens]))
    kv = KVCache()
    stepped = [model.forward(np.array([tokens[:3]]), kv=kv)[0][0]]  # the prompt at once, then token by token
    stepped += [model.forward(np.array([[t]]), kv=kv)[0][0] for t in tokens[3:]]
    np.testing.assert_allclose(np.concatenate(stepped), whole[0], atol=1e-12)
    assert kv.length == len(tokens) and model.caches is None  # decoding keeps nothing for backward
    # past the window of 12 the context shifts; the cache refills and the tokens stay the recomputed ones
    for temperature in (0, 1.0):
        cached = model.generate(tokens, 20, temperature, rng=np.random.default_rng(1))
        recomputed = model.generate(tokens, 20, temperature, rng=np.random.default_rng(1), use_cache=False)
        assert cached == recomputed


def test_numpy_sampling_keeps_and_picks_what_lucidlm_decode_does():
    from lucidlm.decode import SamplingConfig, filter_logits, sample_next
    from lucidlm.scratch import sampling

    logits = np.random.default_rng(0).normal(0, 2, size=(200, 50))
    for settings in [dict(temperature=0.7), dict(top_k=5), dict(top_p=0.9), dict(temperature=1.3, top_k=9, top_p=0.5)]:
        theirs = filter_logits(torch.tensor(logits), SamplingConfig(**settings)).numpy()
        ours = np.stack([sampling.filter_logits(row, **settings) for row in logits])
        np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
        np.testing.assert_allclose(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)], atol=1e-12)
        uniforms = np.random.default_rng(1).random(len(logits))
        picked = sample_next(torch.tensor(logits), SamplingConfig(**settings), None, torch.tensor(uniforms))

        fixed = FixedUniforms(uniforms)  # the same numbers, one per row, for the NumPy sampler
        assert [sampling.sample_next(row, fixed, **settings) for row in logits] == picked.tolist()


class FixedUniforms:
    """A stand-in for np.random.Generator whose random() returns the given numbers in turn."""

    def __init__(self, numbers: np.ndarray):
        self.numbers = iter(numbers)

    def random(self) -> float:
        return next(self.numbers)


def test_a_loss_mask_and_a_gradient_given_on_the_logits_equal_pytorch_autograd():
    """targets of -1 are left out of the loss (as lucidlm's GPT's ignore_index), and backward(dlogits) gives
    the gradients of any loss whose gradient on the logits is dlogits (the NumPy DPO of lesson 26)."""
    config = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8)
    model = NumpyGPT(config, dtype=np.float64, seed=2)
    x = np.random.default_rng(0).integers(0, 11, (3, 6))
    y = np.where(np.arange(6) < 2, -1, np.random.default_rng(1).integers(0, 11, (3, 6)))  # a prompt masked
    weights = np.random.default_rng(2).normal(size=(3, 6, 11))
    reference = to_torch(model)
    logits, loss = reference(torch.from_numpy(x), torch.from_numpy(y))
    (loss + (logits * torch.from_numpy(weights)).sum()).backward()
    _, our_loss = model.forward(x, y)
    masked = model.backward()
    model.forward(x)
    given = model.backward(weights)
    assert abs(our_loss - loss.item()) < 1e-12
    for name, parameter in reference.named_parameters():
        np.testing.assert_allclose(masked[name] + given[name], parameter.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_the_hook_points_hold_the_pytorch_gpts_values_and_a_hook_changes_the_pass():
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
    model = NumpyGPT(config, dtype=np.float64, seed=4)
    x = np.random.default_rng(0).integers(0, 13, (2, 8))
    logits, kept = model.run_with_cache(x)
    twin = to_torch(model)
    names = [f"blocks.{layer}.{point}" for layer in range(2) for point in
             ("hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "hook_resid_post")]  # fmt: skip
    _, theirs = twin.run_with_cache(torch.from_numpy(x), names)
    assert sorted(kept) == sorted(names)
    for name in names:
        np.testing.assert_allclose(kept[name], theirs[name].detach().numpy(), atol=1e-6, err_msg=name)
    ablated = model.run_with_hooks(x, {"blocks.1.attn.hook_z": lambda z: z * np.array([1.0, 0.0])[:, None]})
    with torch.no_grad():
        theirs_ablated = twin.run_with_hooks(
            torch.from_numpy(x), {"blocks.1.attn.hook_z": lambda z, name: z * torch.tensor([1.0, 0.0])[:, None]}
        )
    np.testing.assert_allclose(ablated, theirs_ablated.numpy(), atol=1e-10)
    assert not np.allclose(ablated, logits) and model.hooks == {} and model.kept is None
