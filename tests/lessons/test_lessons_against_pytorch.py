"""The lessons run in NumPy, in the page as on the command line; where a lesson's numbers should equal what
lucidlm's PyTorch code computes, this file runs the lesson and holds its values to PyTorch's."""

import runpy

import numpy as np
import pytest
import torch

from lucidlm.model.gpt import sinusoidal_table
from lucidlm.scratch import NumpyGPT, to_torch
from lucidlm.tutorial.lessons import find_lesson


@pytest.fixture
def run_lesson(tmp_path, monkeypatch):
    """A lesson's variables after it ran (in a temporary directory: some save a figure)."""
    monkeypatch.chdir(tmp_path)
    return lambda number: runpy.run_path(str(find_lesson(number)), run_name="__main__")


def test_lesson_9s_sinusoidal_table_is_the_pytorch_gpts(run_lesson):
    lesson = run_lesson(9)
    np.testing.assert_allclose(lesson["table"], sinusoidal_table(lesson["T"], lesson["C"]).numpy(), atol=1e-6)


def test_lesson_16s_gradients_are_autograds(run_lesson):
    lesson = run_lesson(16)
    model, x, y = lesson["model"], lesson["x"], lesson["y"]
    reference = to_torch(model)  # the same weights, float64
    loss = reference(torch.from_numpy(x), torch.from_numpy(y))[1]
    loss.backward()
    assert abs(loss.item() - lesson["loss"]) < 1e-12
    for name, parameter in reference.named_parameters():
        np.testing.assert_allclose(lesson["grads"][name], parameter.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_lesson_17s_loss_curve_is_pytorchs_on_the_same_batches(run_lesson):
    lesson = run_lesson(17)
    data, config = lesson["data"], lesson["config"]
    model = to_torch(NumpyGPT(config, seed=0)).train()  # the weights the lesson started from
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.0)
    rng, losses = np.random.default_rng(0), []
    for _ in range(len(lesson["losses"])):  # the lesson's batches, drawn the lesson's way
        starts = rng.integers(0, len(data) - 33, 8)
        x = torch.from_numpy(np.stack([data[s : s + 32] for s in starts]))
        y = torch.from_numpy(np.stack([data[s + 1 : s + 33] for s in starts]))
        optimizer.zero_grad()
        loss = model(x, y)[1]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    np.testing.assert_allclose(lesson["losses"], losses, atol=1e-3)  # float32 rounding only


def test_lesson_19s_flop_count_of_the_weights_is_pytorchs_flop_counters(run_lesson):
    """The matrix products with the weights, as PyTorch's FlopCounterMode counts them in lucidlm's GPT (it sees
    no attention FLOPs there: the CPU attention kernel runs below what it counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    from lucidlm.model import GPT

    lesson = run_lesson(19)
    model = GPT(lesson["config"]).eval()
    for positions in (1, 8, 100):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, positions, dtype=torch.long))
        attention = 4 * lesson["config"].n_layer * positions * positions * lesson["config"].n_embd
        assert lesson["forward_flops"](positions, positions) - attention == counter.get_total_flops()


def test_lesson_26s_dpo_loss_and_its_gradient_are_the_trainers(run_lesson):
    """The lesson's NumPy DPO (loss, the chain rule to the logits, the GPT's backward) against lucidlm's
    `dpo_loss` and `sequence_logprobs` under autograd, on the lesson's pairs from its starting weights."""
    from lucidlm.train.objectives import dpo_loss, sequence_logprobs

    lesson = run_lesson(26)
    x, y, pairs = lesson["x"], lesson["y"], lesson["pairs"]
    policy = lesson["NumpyGPT"](lesson["config"], dtype=np.float64, seed=1)  # weights apart from the reference's
    reference_logprobs, _ = lesson["sequence_logprobs"](lesson["reference"].forward(x)[0].astype(np.float64), y)
    logprobs, dlogits = lesson["sequence_logprobs"](policy.forward(x)[0], y)
    loss, dlogprobs, _ = lesson["dpo_loss"](
        logprobs[:pairs], logprobs[pairs:], reference_logprobs[:pairs], reference_logprobs[pairs:], 0.5
    )
    ours = policy.backward(dlogprobs[:, None, None] * dlogits)

    twin = to_torch(policy)
    theirs = sequence_logprobs(twin(torch.from_numpy(x))[0], torch.from_numpy(y))
    np.testing.assert_allclose(logprobs, theirs.detach().numpy(), rtol=1e-6)  # the trainer's are float32
    reference = torch.from_numpy(reference_logprobs)
    torch_loss, _ = dpo_loss(theirs[:pairs], theirs[pairs:], reference[:pairs], reference[pairs:], 0.5)
    torch_loss.backward()
    assert abs(loss - torch_loss.item()) < 1e-6
    for name, parameter in twin.named_parameters():
        np.testing.assert_allclose(ours[name], parameter.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_lesson_25s_adapted_model_is_lucidlms_lora_model(run_lesson):
    """The lesson's trained A and B, put into lucidlm's LoRALinear layers around its frozen weights: the
    PyTorch model (adapters' two paths) gives the lesson's merged logits."""
    from lucidlm.model.lora import add_lora

    lesson = run_lesson(25)
    base = NumpyGPT(lesson["config"], seed=0)
    base.params = {name: weight.copy() for name, weight in lesson["frozen"].items()}
    twin = to_torch(base)
    add_lora(twin, lesson["rank"], lesson["alpha"], ",".join(lesson["targets"]))
    modules = dict(twin.named_modules())
    with torch.no_grad():
        for name, (A, B) in lesson["adapters"].items():
            layer = modules[name.removesuffix(".weight")]
            layer.lora_A.copy_(torch.from_numpy(A))
            layer.lora_B.copy_(torch.from_numpy(B))
        logits = twin(torch.from_numpy(lesson["x"]))[0].numpy()
    np.testing.assert_allclose(logits, lesson["merged_logits"], atol=1e-4)


def test_lesson_24s_masked_loss_is_the_pytorch_gpts(run_lesson):
    """The NumPy loss with targets of -1 left out, on the lesson's batch of conversations, against lucidlm's
    GPT (ignore_index=-1) with the same weights."""
    lesson = run_lesson(24)
    model, x = lesson["model"], lesson["x"]
    twin = to_torch(model)
    for targets in (lesson["reply_targets"], lesson["all_targets"]):
        with torch.no_grad():
            theirs = twin(torch.from_numpy(x), torch.from_numpy(targets))[1].item()
        assert abs(model.forward(x, targets)[1] - theirs) < 1e-5
    assert (lesson["reply_targets"] == -1).sum() > (lesson["all_targets"] == -1).sum()  # the mask left some out


def test_lesson_22s_lens_is_lucidlm_lens_logit(run_lesson):
    from lucidlm.lens import logit_lens

    lesson = run_lesson(22)
    twin = to_torch(lesson["model"]).eval()
    lens = logit_lens(twin, lesson["ids"][0].tolist(), top=1)
    np.testing.assert_allclose(lens["kl_to_output"], lesson["kl"], atol=1e-4)
    probability = [sum(p) / len(p) for p in lens["prediction_probability"]]
    np.testing.assert_allclose(probability, lesson["probability"], atol=1e-4)


def test_lesson_21s_counts_and_law_are_lucidlms(run_lesson):
    """Its parameter count is lucidlm's GPT's; its NumPy fit of the scaling law predicts what the law that
    train/recipe.py sizes runs with (ScalingLaw.fit's, L-BFGS on a Huber loss, on these runs) predicts."""
    from lucidlm.scaling_law import count_parameters, effective_tokens
    from lucidlm.train.recipe import SHAKESPEARE_LAW

    lesson = run_lesson(21)
    assert lesson["parameters"](lesson["c"]) == count_parameters(lesson["c"])
    for _, n, d, _ in [*lesson["runs"], lesson["left_out"]]:
        tokens = effective_tokens(d, lesson["UNIQUE"])
        assert abs(lesson["law"].loss(n, tokens) - SHAKESPEARE_LAW.loss(n, tokens)) < 0.02


def test_lesson_23s_head_scores_ablation_and_patching_are_lucidlm_lens(run_lesson):
    """The NumPy lesson's scores, mean-ablation and residual patching, read through the NumPy GPT's hook points,
    are what lucidlm.lens (`lucidlm lens heads`, `patch`) and the PyTorch GPT's hooks give on the same weights."""
    from lucidlm.lens import attention_scores, patching

    lesson = run_lesson(23)
    twin, test, n = to_torch(lesson["model"]), lesson["test"], lesson["n"]
    scores = attention_scores(twin, test.tolist(), n)
    for kind, per_layer in lesson["scores"].items():
        np.testing.assert_allclose([row[0] for row in scores[kind]], per_layer, atol=1e-5)
    name = "blocks.1.attn.hook_z"
    with torch.no_grad():
        ids = torch.from_numpy(test)
        _, cache = twin.run_with_cache(ids, [name])
        mean = cache[name].mean(dim=(0, 1), keepdim=True)
        ablated = twin.run_with_hooks(ids, {name: lambda z, _: mean.expand_as(z)}).numpy()
    np.testing.assert_allclose(lesson["loss_per_half"](ablated), lesson["without_head"](1), atol=1e-4)
    clean, corrupted = lesson["clean"][0].tolist(), lesson["corrupted"][0].tolist()
    patched = patching(twin, clean, corrupted, int(lesson["answer"]), int(lesson["wrong"]))
    np.testing.assert_allclose(patched["residual"], lesson["residual"], atol=1e-3)
