import itertools
import math

import pytest
import torch

from lucidlm.errors import ConfigError
from lucidlm.model import GPT, GPTConfig
from lucidlm.model.config import MLPS, NORMS, POSITIONS
from lucidlm.model.kernels import (
    CAUSAL_BLOCK_QUERIES,
    RMSNorm,
    RMSNormFunction,
    causal_attention_in_blocks,
    gelu_tanh_by_sigmoid,
    written_out_attention,
)


def tiny(**overrides) -> GPTConfig:
    settings = dict(vocab_size=23, block_size=12, n_layer=2, n_head=4, n_embd=32)
    settings.update(overrides)
    return GPTConfig(**settings)


EVERY_SWITCH = [dict(positions=p, norm=n, mlp=m) for p, n, m in itertools.product(POSITIONS, NORMS, MLPS)] + [
    dict(bias=True),
    dict(tie_embeddings=False),
    dict(n_kv_head=2),
    dict(n_kv_head=1, positions="rope"),
    dict(dropout=0.1),
    dict(mlp_hidden=40),
    dict(qk_norm=True, norm="rmsnorm", positions="rope", n_kv_head=2),
]


def explicit_pass(model: GPT, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The logits through the written-out attention, and each layer's weights (B, H, T, T), by the hooks."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.config.n_layer)]
    logits, cache = model.run_with_cache(x, names)
    return logits, [cache[name] for name in names]


def model_for(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny(**overrides))


@pytest.mark.parametrize("switches", EVERY_SWITCH, ids=str)
def test_every_switch_builds_runs_and_learns(switches):
    model = model_for(**switches)
    x = torch.randint(0, 23, (4, 12), generator=torch.Generator().manual_seed(1))
    logits, loss = model(x, x.roll(-1, dims=1))
    assert logits.shape == (4, 12, 23)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = loss.item()
    for _ in range(10):
        optimizer.zero_grad()
        _, loss = model(x, x.roll(-1, dims=1))
        loss.backward()
        optimizer.step()
    assert loss.item() < first - 0.5


@pytest.mark.parametrize("switches", [s for s in EVERY_SWITCH if "dropout" not in s], ids=str)
def test_fast_attention_equals_the_explicit_path(switches):
    model = model_for(**switches).eval()
    x = torch.randint(0, 23, (3, 12), generator=torch.Generator().manual_seed(2))
    fast, _ = model(x)
    explicit, weights = explicit_pass(model, x)
    torch.testing.assert_close(fast, explicit, rtol=0, atol=1e-5)
    assert len(weights) == 2 and weights[0].shape == (3, 4, 12, 12)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(3, 4, 12))
    assert torch.all(weights[0].triu(diagonal=1) == 0)  # nothing attends to the future


@pytest.mark.parametrize("n_blocks", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_causal_attention_in_blocks_equals_one_pass(dtype, n_blocks):
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 16, 8, generator=generator).to(dtype).requires_grad_()
    k, v = (torch.randn(2, 2, 16, 8, generator=generator).to(dtype).requires_grad_() for _ in range(2))
    out_grad = torch.randn(2, 4, 16, 8, generator=generator).to(dtype)
    in_blocks = causal_attention_in_blocks(q, k, v, n_blocks)  # 3 blocks of 16: 5, 5 and 6 queries
    in_blocks_grads = torch.autograd.grad(in_blocks, (q, k, v), out_grad)
    one_pass = written_out_attention(q, k, v, None)
    one_pass_grads = torch.autograd.grad(one_pass, (q, k, v), out_grad)
    torch.testing.assert_close(in_blocks, one_pass, rtol=0, atol=1e-6)
    for got, expected in zip(in_blocks_grads, one_pass_grads, strict=True):
        # the early keys and values get their gradient in up to n_blocks parts, summed: in bf16 each addition
        # rounds once more, by up to a bf16 step (1/128) of the largest of them
        atol = 1e-6 if dtype == torch.float32 else (n_blocks - 1) * expected.abs().max().item() / 128
        torch.testing.assert_close(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("length", [2 * CAUSAL_BLOCK_QUERIES, 4 * CAUSAL_BLOCK_QUERIES + 3])  # 2 and 4 blocks
def test_bf16_forward_through_the_blocks_matches_the_explicit_path(length):
    model = model_for(block_size=length, n_kv_head=2).eval()
    x = torch.randint(0, 23, (2, length), generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, _ = model(x)
        explicit, _ = explicit_pass(model, x)
    torch.testing.assert_close(fast, explicit, rtol=0, atol=1e-6)


def test_gelu_through_sigmoid_is_gpt2s_tanh_gelu():
    h = torch.linspace(-8, 8, 2001, dtype=torch.float64, requires_grad=True)
    by_sigmoid = gelu_tanh_by_sigmoid(h)
    by_tanh = torch.nn.functional.gelu(h, approximate="tanh")
    torch.testing.assert_close(by_sigmoid, by_tanh, rtol=0, atol=1e-12)
    (sigmoid_grad,) = torch.autograd.grad(by_sigmoid.sum(), h)
    (tanh_grad,) = torch.autograd.grad(by_tanh.sum(), h)
    torch.testing.assert_close(sigmoid_grad, tanh_grad, rtol=0, atol=1e-12)
    assert gelu_tanh_by_sigmoid(h.detach().to(torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("switches", [{}, dict(positions="rope", n_kv_head=2), dict(positions="sinusoidal")], ids=str)
def test_causality_future_tokens_do_not_change_the_past(switches):
    model = model_for(**switches).eval()
    x = torch.randint(0, 23, (2, 12), generator=torch.Generator().manual_seed(3))
    changed = x.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % 23
    for forward in (lambda ids: model(ids)[0], lambda ids: explicit_pass(model, ids)[0]):
        before, after = forward(x), forward(changed)
        torch.testing.assert_close(before[:, :7], after[:, :7], rtol=0, atol=0)
        assert not torch.allclose(before[:, 7:], after[:, 7:])


@pytest.mark.parametrize(
    "switches",
    [{}, dict(positions="rope", n_kv_head=2, norm="rmsnorm", mlp="swiglu"), dict(positions="sinusoidal")],
    ids=str,
)
def test_kv_cache_gives_the_logits_of_a_full_pass(switches):
    model = model_for(**switches).eval()
    x = torch.randint(0, 23, (2, 12), generator=torch.Generator().manual_seed(4))
    full, _ = model(x)
    cache = model.new_cache(batch_size=2)
    pieces = [model(x[:, a:b], cache=cache)[0] for a, b in ((0, 5), (5, 6), (6, 9), (9, 12))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)
    assert cache.length == 12
    with pytest.raises(ValueError, match="longer than block_size=12"):
        model(x[:, :1], cache=cache)


def test_parameter_count_of_the_nanogpt_baby_shape():
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(config)
    C, L = 128, 4
    per_layer = 4 * C * C + 8 * C * C + 2 * C  # attention, MLP, two LayerNorm gains (no biases)
    assert model.num_params() == L * per_layer + 65 * C + C  # + tied embedding/head + final norm
    assert model.num_params(include_position_embeddings=True) == model.num_params() + 64 * C
    assert model.num_params() == 795_904  # nanoGPT prints 0.80M for this recipe


def test_grouped_query_attention_shrinks_the_key_value_projection():
    assert GPT(tiny(n_kv_head=1)).transformer.h[0].attn.c_attn.weight.shape == (32 + 2 * 8, 32)
    assert GPT(tiny(mlp="swiglu")).transformer.h[0].mlp.c_fc.weight.shape == (2 * 96, 32)  # 8/3*32 -> 96


def test_gpt2_initialisation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=1000, n_layer=8, n_embd=256, n_head=4, block_size=32, bias=True))
    proj = model.transformer.h[0].mlp.c_proj.weight
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 2e-4
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 2e-4
    assert torch.all(model.transformer.h[0].mlp.c_fc.bias == 0)
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(positions="alibi"), "positions='alibi' is not one of"),
        (dict(n_embd=30), "not divisible by n_head"),
        (dict(n_kv_head=3), "not a multiple of n_kv_head=3"),
        (dict(dropout=1.0), "dropout=1.0"),
        (dict(n_layer=0), "n_layer=0 must be a positive"),
        (dict(qk_norm=True), "qk_norm normalises queries and keys with RMSNorm; set norm=rmsnorm as well"),
    ],
)
def test_bad_configurations_are_clear_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**settings)


def test_saved_state_round_trip_and_mismatch():
    model, other = model_for(seed=1), model_for(seed=2)
    state = model.state_for_saving()
    assert "lm_head.weight" not in state
    other.load_saved_state(state)
    x = torch.randint(0, 23, (1, 12))
    torch.testing.assert_close(model(x)[0], other(x)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="wrong shape: transformer.wte.weight"):
        GPT(tiny(vocab_size=24)).load_saved_state(state)


@pytest.mark.parametrize("switches", [{}, dict(positions="rope", n_kv_head=1)], ids=str)
def test_static_kv_cache_gives_the_logits_of_a_full_pass(switches):
    """The static cache attends over all of its positions, the unwritten ones masked: same logits."""
    model = model_for(**switches).eval()
    x = torch.randint(0, 23, (2, 12), generator=torch.Generator().manual_seed(4))
    full, _ = model(x)
    cache = model.new_cache(batch_size=2, static=True)
    pieces = [model(x[:, a:b], cache=cache)[0] for a, b in ((0, 5), (5, 6), (6, 9), (9, 12))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)
    assert int(cache.position) == 12
    cache.reset()
    torch.testing.assert_close(model(x[:, :3], cache=cache)[0], full[:, :3], rtol=0, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True])
def test_rmsnorm_hand_written_backward_equals_autograd_of_nn_rmsnorm(transposed):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, 8, generator=generator)
    x = x.transpose(1, 2) if transposed else x  # q_norm and k_norm see (B, H, T, D) views like this one
    grad = torch.randn(x.shape, generator=generator)
    ours, reference = RMSNorm(8, eps=1e-5), torch.nn.RMSNorm(8, eps=1e-5)
    with torch.no_grad():
        for norm in (ours, reference):
            norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
    outputs, grads = [], []
    for norm in (ours, reference):
        inputs = x.clone().requires_grad_()
        out = norm(inputs)
        out.backward(grad)
        outputs.append(out)
        grads.append((inputs.grad, norm.weight.grad))
    assert outputs[0].grad_fn.name() == "RMSNormFunctionBackward"  # the hand-written path did run
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-5)


def test_rmsnorm_backward_passes_gradcheck_in_float64():
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: RMSNormFunction.apply(a, w, 1e-5), (x, weight))
