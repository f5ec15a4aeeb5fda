"""Hook points: the names, what each holds (checked against the model's own arithmetic), and replacing one."""

import pytest
import torch

from lucidlm.model import GPT, GPTConfig


def model_for(**switches) -> GPT:
    torch.manual_seed(0)
    settings = dict(vocab_size=29, block_size=10, n_layer=2, n_head=4, n_embd=32, bias=True) | switches
    return GPT(GPTConfig(**settings)).eval()


IDS = torch.randint(0, 29, (2, 9), generator=torch.Generator().manual_seed(1))


def test_the_names_are_transformerlens_names_in_forward_order():
    names = model_for().hook_names()
    assert names[:4] == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_normalized"]
    assert names[-2:] == ["blocks.1.hook_resid_post", "ln_final.hook_normalized"]
    assert len(names) == 3 + 2 * 15  # no rotated queries without RoPE or QK-norm
    rope = model_for(positions="rope", n_kv_head=2).hook_names()
    assert "hook_pos_embed" not in rope and "blocks.1.attn.hook_rot_k" in rope and len(rope) == 2 + 2 * 17


@pytest.mark.parametrize("switches", [{}, dict(positions="rope", n_kv_head=2, norm="rmsnorm", mlp="swiglu")], ids=str)
def test_each_point_holds_what_its_name_says(switches):
    model = model_for(**switches)
    with torch.no_grad():
        logits, cache = model.run_with_cache(IDS)
        assert sorted(cache) == sorted(model.hook_names())
        torch.testing.assert_close(logits, model(IDS)[0], rtol=0, atol=1e-5)  # written-out attention: to rounding
        for layer, block in enumerate(model.transformer.h):
            at = {name.removeprefix(f"blocks.{layer}."): value for name, value in cache.items()}
            assert at["attn.hook_q"].shape == (2, 9, 4, 8) and at["attn.hook_pattern"].shape == (2, 4, 9, 9)
            heads = at["attn.hook_z"].flatten(2)  # (B, T, H * D)
            torch.testing.assert_close(at["hook_attn_out"], block.attn.c_proj(heads), rtol=0, atol=0)
            torch.testing.assert_close(at["hook_resid_mid"], at["hook_resid_pre"] + at["hook_attn_out"])
            torch.testing.assert_close(at["hook_resid_post"], at["hook_resid_mid"] + at["hook_mlp_out"])
            torch.testing.assert_close(at["mlp.hook_post"], block.mlp.activation(at["mlp.hook_pre"]), rtol=0, atol=0)
            torch.testing.assert_close(at["attn.hook_pattern"], at["attn.hook_attn_scores"].softmax(-1))
        final = cache["ln_final.hook_normalized"]
        torch.testing.assert_close(final, model.transformer.ln_f(cache["blocks.1.hook_resid_post"]), rtol=0, atol=0)
        torch.testing.assert_close(logits, model.lm_head(final), rtol=0, atol=0)


def test_a_hook_that_looks_changes_nothing_and_one_that_replaces_does():
    model = model_for()
    with torch.no_grad():
        plain = model(IDS)[0]
        looked = model.run_with_hooks(IDS, {"blocks.0.hook_resid_pre": lambda x, name: None})
        torch.testing.assert_close(looked, plain, rtol=0, atol=0)

        def remove_head_2(z: torch.Tensor, name: str) -> torch.Tensor:
            z = z.clone()
            z[:, :, 2] = 0
            return z

        ablated = model.run_with_hooks(IDS, {"blocks.1.attn.hook_z": remove_head_2})
        _, cache = model.run_with_cache(IDS, ["blocks.1.attn.hook_z", "blocks.1.hook_resid_mid"])
        block = model.transformer.h[1]
        # by hand: the head's share of attention's output (the projection's columns that read it) taken away
        share = cache["blocks.1.attn.hook_z"][:, :, 2] @ block.attn.c_proj.weight[:, 2 * 8 : 3 * 8].T  # (B, T, C)
        mid = cache["blocks.1.hook_resid_mid"] - share
        by_hand = model.lm_head(model.transformer.ln_f(mid + block.mlp(block.ln_2(mid))))
        torch.testing.assert_close(ablated, by_hand, rtol=0, atol=1e-5)
        assert not torch.allclose(ablated, plain, atol=1e-3)
    assert model.hooks == {}  # set for one pass only


def test_a_bad_hook_is_refused_and_leaves_no_hook_behind():
    model = model_for()
    with pytest.raises(ValueError, match=r"no hook point blocks\.7\.hook_resid_pre \(GPT.hook_names\(\) lists them\)"):
        model.run_with_hooks(IDS, {"blocks.7.hook_resid_pre": lambda x, name: None})
    with pytest.raises(ValueError, match=r"the hook at hook_embed returned shape \(2, 9\): \(2, 9, 32\)"):
        model.run_with_hooks(IDS, {"hook_embed": lambda x, name: x.sum(-1)})
    assert model.hooks == {}
