"""lens.py: each analysis against what the model's own arithmetic says it must be."""

import math

import pytest
import torch
import torch.nn.functional as F

from lucidlm.lens import ablation, direct_logit_attribution, head_scores, logit_lens, patching
from lucidlm.model import GPT, GPTConfig

LAYOUTS = {
    "gpt2": dict(positions="learned", norm="layernorm", mlp="gelu", bias=True),
    "llama": dict(positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, tie_embeddings=False),
}


def model_for(layout: str = "gpt2", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=31, block_size=24, n_layer=2, n_head=4, n_embd=32, **LAYOUTS[layout])).eval()


IDS = [3, 14, 15, 9, 2, 6, 5, 3, 5, 8, 9, 7]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_last_reading_of_the_logit_lens_is_the_models_output(layout):
    model = model_for(layout)
    lens = logit_lens(model, IDS, top=3)
    with torch.no_grad():
        output = model(torch.tensor([IDS]))[0][0].softmax(-1)  # (T, V)
    assert len(lens["top_tokens"]) == 3 and lens["layers"] == ["embeddings", "layer 0", "layer 1"]
    assert lens["prediction"] == output.argmax(-1).tolist()
    assert [tokens[0] for tokens in lens["top_tokens"][-1]] == lens["prediction"]
    assert lens["prediction_rank"][-1] == [0] * len(IDS)
    torch.testing.assert_close(torch.tensor(lens["prediction_probability"][-1]), output.max(-1).values)
    assert abs(lens["kl_to_output"][-1]) < 1e-5 and all(kl > 0 for kl in lens["kl_to_output"][:-1])


def test_with_attention_left_uniform_every_head_scores_the_mean_of_one_over_the_keys():
    """Queries and keys of zero make every score 0, so each head spreads its attention evenly over the keys it
    may see: at position i, 1 / (i + 1) on each, whichever key a score asks about."""
    model = model_for()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight[: 2 * 32] = 0  # the query and key rows
            block.attn.c_attn.bias[: 2 * 32] = 0
    scores = head_scores(model, length=8, batch=2)
    expected = sum(1 / (i + 1) for i in range(8, 16)) / 8
    for name in ("previous_token", "duplicate_token", "induction"):
        torch.testing.assert_close(torch.tensor(scores[name]), torch.full((2, 4), expected), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"length must lie in 2\.\.12"):
        head_scores(model, length=13)


def test_ablating_a_head_or_an_mlp_adds_the_loss_of_that_model_without_it():
    model = model_for()
    result = ablation(model, IDS)
    tokens = torch.tensor([IDS])
    with torch.no_grad():
        base = F.cross_entropy(model(tokens[:, :-1])[0][0], tokens[0, 1:]).item()

        def without_head(z, name):
            z = z.clone()
            z[:, :, 1] = 0
            return z

        logits = model.run_with_hooks(tokens[:, :-1], {"blocks.1.attn.hook_z": without_head})
        head = F.cross_entropy(logits[0], tokens[0, 1:]).item() - base
        logits = model.run_with_hooks(tokens[:, :-1], {"blocks.0.hook_mlp_out": lambda x, n: torch.zeros_like(x)})
        mlp = F.cross_entropy(logits[0], tokens[0, 1:]).item() - base
    assert result["loss"] == pytest.approx(base, abs=1e-6)
    assert result["heads"][1][1] == pytest.approx(head, abs=1e-6) and result["mlps"][0] == pytest.approx(mlp, abs=1e-6)
    mean = ablation(model, IDS, "mean")
    assert len(mean["heads"]) == 2 and len(mean["heads"][0]) == 4 and mean["heads"] != result["heads"]
    with pytest.raises(ValueError, match="ablation 'half' is not one of: zero, mean"):
        ablation(model, IDS, "half")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("other", [None, 7])
def test_the_direct_contributions_add_up_to_the_logit(layout, other):
    model = model_for(layout)
    parts = direct_logit_attribution(model, IDS, position=5, token=11, other=other)
    added = parts["embeddings"] + sum(map(sum, parts["heads"])) + sum(parts["mlps"]) + parts["biases"]
    with torch.no_grad():
        logits = model(torch.tensor([IDS]))[0][0, 5]
    assert parts["total"] == pytest.approx(float(logits[11] - (logits[other] if other is not None else 0)), abs=1e-5)
    assert added == pytest.approx(parts["total"], abs=1e-4)


def test_patching_the_one_position_that_differs_restores_everything_and_elsewhere_nothing():
    model = model_for()
    corrupted = list(IDS)
    corrupted[4] = 20
    with torch.no_grad():
        clean_last = model(torch.tensor([IDS]))[0][0, -1]
    answer, wrong = int(clean_last.argmax()), int(clean_last.argmin())
    result = patching(model, IDS, corrupted, answer, wrong)
    assert result["residual"][0][4] == pytest.approx(1.0, abs=1e-5)  # before layer 0 the runs differ only there
    assert all(abs(value) < 1e-6 for p, value in enumerate(result["residual"][0]) if p != 4)
    assert result["residual"][1][:4] == pytest.approx([0.0] * 4, abs=1e-6)  # earlier positions never saw it
    assert len(result["heads"]) == 2 and len(result["heads"][0]) == 4
    assert math.isfinite(result["clean_difference"]) and result["clean_difference"] != result["corrupted_difference"]
    with pytest.raises(ValueError, match="must be of equal length, not 12 and 11"):
        patching(model, IDS, IDS[:-1], answer, wrong)
