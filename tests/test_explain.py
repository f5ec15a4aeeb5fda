"""explain.py: the forward pass at one position, every intermediate, equal to the model's own forward pass."""

import pytest
import torch

from lucidlm.explain import explain
from lucidlm.model import GPT, GPTConfig

SWITCHES = [
    dict(positions="learned", norm="layernorm", mlp="gelu", bias=True),
    dict(positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1, qk_norm=True, tie_embeddings=False),
    dict(positions="sinusoidal", mlp="relu2"),
]


@pytest.mark.parametrize("switches", SWITCHES)
def test_the_explained_pass_is_the_models(switches):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=4, n_embd=32, **switches)).eval()
    ids = torch.randint(0, 30, (12,)).tolist()
    view = explain(model, ids, position=7, layer=1, head=2)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(torch.tensor([ids]), names)
        weights = [cache[name] for name in names]
        torch.testing.assert_close(torch.tensor(view["logits"]), logits[0, 7], atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(view["heatmap"]["weights"]), weights[1][0, 2], atol=1e-6, rtol=0)
        for layer in range(2):
            torch.testing.assert_close(torch.tensor(view["layers"][layer]["weights"]), weights[layer][0, :, 7])
        torch.testing.assert_close(torch.tensor(view["token_embedding"]), model.transformer.wte.weight[ids[7]])
    scores = view["layers"][0]["scores"]
    assert len(scores) == 4 and all(s[8:] == [None] * 4 and None not in s[:8] for s in scores)  # masked: after 7
    assert len(view["residual_norms"]) == 3
    assert (view["position_embedding"] is None) == (switches["positions"] == "rope")


def test_a_position_outside_the_text_or_a_missing_head_is_refused():
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=4, n_embd=32)).eval()
    with pytest.raises(ValueError, match="position 5 is outside the 5 tokens"):
        explain(model, [1, 2, 3, 4, 5], 5)
    with pytest.raises(ValueError, match="there is no head 4 in layer 0: the model has 2 layers of 4"):
        explain(model, [1, 2, 3], 1, head=4)
