"""Decoding through oneDNN (model/onednn.py): the same numbers as nn.Linear, over the same weights."""

import pytest
import torch

from lucidlm.decode import SamplingConfig
from lucidlm.generate import generate_ids
from lucidlm.model import GPT, GPTConfig
from lucidlm.model.onednn import ONEDNN_AT, OneDNNLinear, can_use_onednn, decode_with_onednn

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")

SWITCHES = [
    dict(),
    dict(positions="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, tie_embeddings=False, n_kv_head=2),
]


@pytest.mark.parametrize("switches", SWITCHES)
def test_logits_and_greedy_tokens_equal_nn_linears(switches):
    torch.manual_seed(0)
    # width 512: the attention and MLP matrices (524,288 numbers and more) and the 1,024 x 512 output layer go
    # through oneDNN; the attention's output projection (512 x 512) is below ONEDNN_AT and stays nn.Linear
    config = GPTConfig(vocab_size=1024, n_layer=2, n_head=4, n_embd=512, block_size=32, bias=True, **switches)
    model = GPT(config).eval()
    ids = torch.randint(0, 1024, (2, 20))
    with torch.no_grad():
        expected, _ = model(ids)
    greedy = list(generate_ids(model, [5, 6, 7], 12, SamplingConfig(temperature=0)))
    parameters = dict(model.named_parameters())
    decode_with_onednn(model)
    block = model.transformer.h[0]
    assert all(isinstance(m, OneDNNLinear) for m in (block.attn.c_attn, block.mlp.c_fc, block.mlp.c_proj))
    assert isinstance(model.lm_head, OneDNNLinear) and isinstance(block.attn.c_proj, torch.nn.Linear)
    assert {name: p for name, p in model.named_parameters()} == parameters  # the same tensors, not copies
    with torch.no_grad():
        switched, _ = model(ids)
    torch.testing.assert_close(switched, expected, atol=1e-4, rtol=1e-4)
    assert list(generate_ids(model, [5, 6, 7], 12, SamplingConfig(temperature=0))) == greedy


def test_small_models_and_float16_keep_nn_linear():
    baby = GPT(GPTConfig(vocab_size=65, n_layer=1, n_head=4, n_embd=128, block_size=16))
    decode_with_onednn(baby)
    assert not any(isinstance(m, OneDNNLinear) for m in baby.modules())
    assert baby.lm_head.weight.numel() < ONEDNN_AT
    half = GPT(GPTConfig(vocab_size=1024, n_layer=1, n_head=4, n_embd=512, block_size=16)).half()
    assert not can_use_onednn(half)
    decode_with_onednn(half)
    assert not any(isinstance(m, OneDNNLinear) for m in half.modules())
