"""Hook points: the names, what each holds (checked against the model's own arithmetic), and replacing one."""

import pytest
import torch

from lucidlm.model import GPT, GPTConfig


def model_for(**switches) -> GPT:
    torch.manual_seed(0)
    settings = dict(vocab_size=29, block_size=10, n_layer=2, n_head=4, n_embd=32, bias=True) | switches
    model = GPT(GPTConfig(**settings)).eval()
    with torch.no_grad():  # gains and biases other than ones and zeros, which would hide a point on the wrong side
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


IDS = torch.randint(0, 29, (2, 9), generator=torch.Generator().manual_seed(1))


def test_the_names_are_transformerlens_names_in_forward_order():
    names = model_for().hook_names()
    assert names[:4] == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_normalized"]
    assert names[-2:] == ["blocks.1.hook_resid_post", "ln_final.hook_normalized"]
    assert len(names) == 3 + 2 * 15  # no rotated queries without RoPE or QK-norm
    rope = model_for(positions="rope", n_kv_head=2).hook_names()
    assert "hook_pos_embed" not in rope and "blocks.1.attn.hook_rot_k" in rope and len(rope) == 2 + 2 * 17
    gated = model_for(mlp="swiglu").hook_names()  # SwiGLU's value side has a point of its own
    assert "blocks.0.mlp.hook_pre_linear" in gated and len(gated) == 3 + 2 * 16


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
            if "mlp.hook_pre_linear" in at:  # SwiGLU: silu(gate) * value
                gated = torch.nn.functional.silu(at["mlp.hook_pre"]) * at["mlp.hook_pre_linear"]
                torch.testing.assert_close(at["mlp.hook_post"], gated, rtol=0, atol=0)
                pre = torch.cat([at["mlp.hook_pre"], at["mlp.hook_pre_linear"]], -1)
            else:
                torch.testing.assert_close(
                    at["mlp.hook_post"], block.mlp.activation(at["mlp.hook_pre"]), rtol=0, atol=0
                )
                pre = at["mlp.hook_pre"]
            torch.testing.assert_close(pre, block.mlp.c_fc(block.ln_2(at["hook_resid_mid"])), rtol=0, atol=1e-5)
            torch.testing.assert_close(at["attn.hook_pattern"], at["attn.hook_attn_scores"].softmax(-1))
            for norm, point, before in [(block.ln_1, "ln1", "hook_resid_pre"), (block.ln_2, "ln2", "hook_resid_mid")]:
                assert_before_the_gain(norm, at[f"{point}.hook_normalized"], at[before])
        final = cache["ln_final.hook_normalized"]
        assert_before_the_gain(model.transformer.ln_f, final, cache["blocks.1.hook_resid_post"])
        residual = cache["blocks.1.hook_resid_post"]
        torch.testing.assert_close(logits, model.lm_head(model.transformer.ln_f(residual)), rtol=0, atol=1e-5)


def assert_before_the_gain(norm: torch.nn.Module, normalized: torch.Tensor, stream: torch.Tensor) -> None:
    """A norm's point holds the normalised stream before the gain and bias, as TransformerLens's does: the
    norm's output once the gain is applied, and not that output itself."""
    if isinstance(norm, torch.nn.LayerNorm):
        torch.testing.assert_close(normalized.mean(-1), torch.zeros(normalized.shape[:-1]), rtol=0, atol=1e-5)
    gained = normalized * norm.weight + (norm.bias if getattr(norm, "bias", None) is not None else 0)
    torch.testing.assert_close(gained, norm(stream), rtol=0, atol=1e-5)
    assert not torch.allclose(normalized, norm(stream), atol=1e-2)


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
    assert model.scope.current() is None  # set for one pass only


def test_a_bad_hook_is_refused_and_leaves_no_hook_behind():
    model = model_for()
    with pytest.raises(ValueError, match=r"no hook point blocks\.7\.hook_resid_pre \(GPT.hook_names\(\) lists them\)"):
        model.run_with_hooks(IDS, {"blocks.7.hook_resid_pre": lambda x, name: None})
    with pytest.raises(ValueError, match=r"the hook at hook_embed returned shape \(2, 9\): \(2, 9, 32\)"):
        model.run_with_hooks(IDS, {"hook_embed": lambda x, name: x.sum(-1)})
    assert model.scope.current() is None


def test_a_pass_with_hooks_runs_the_eager_blocks_even_where_compiled_ones_train():
    """Compiled code runs unhooked (Dynamo cannot read the hooks' context variable), so a hooked pass with
    gradients on, where training would take the compiled blocks, takes the eager ones and sees every point."""
    model = model_for()

    class NotToBeCalled(torch.nn.Module):
        def forward(self, *args):
            raise AssertionError("a hooked pass reached a compiled block")

    model.compiled_blocks = [NotToBeCalled() for _ in model.transformer.h]
    with torch.enable_grad():
        _, cache = model.run_with_cache(IDS, ["blocks.1.hook_resid_post"])
        with pytest.raises(AssertionError, match="reached a compiled block"):
            model(IDS)  # without hooks, training's path
    assert cache["blocks.1.hook_resid_post"].shape == (*IDS.shape, model.config.n_embd)
