import pytest
import torch
from torch.optim import _muon as torch_muon

from lucidlm.errors import ConfigError
from lucidlm.model import GPT
from lucidlm.train import train
from lucidlm.train.optim import NEWTON_SCHULZ_COEFFICIENTS, MuonWithAdamW, make_optimizer, newton_schulz

from ..conftest import tiny_config
from .test_trainer import losses


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (48, 48)])
def test_newton_schulz_keeps_the_singular_vectors_and_maps_each_singular_value_by_the_quintic(shape):
    generator = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(shape[0], min(shape), generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], min(shape), generator=generator, dtype=torch.float64))
    singular_values = torch.logspace(0, -2, min(shape), dtype=torch.float64)  # 100x apart
    matrix = (u * singular_values) @ v.T
    result = newton_schulz(matrix.float()).double()
    # X X^T and the polynomial share X's singular vectors: in their basis the result is diagonal, and each entry
    # is the scalar quintic p(s) = a s + b s^3 + c s^5 applied five times to s = singular value / Frobenius norm
    in_basis = u.T @ result @ v
    predicted = singular_values / singular_values.norm()
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    for _ in range(5):
        predicted = a * predicted + b * predicted**3 + c * predicted**5
    # (the quintic's slope at 0 is a^5, about 480: fp32 rounding in the smallest singular values grows with it)
    torch.testing.assert_close(in_basis, torch.diag(predicted), rtol=0, atol=1e-3)
    # which is the point of Muon: singular values 100x apart all come out near 1
    assert predicted.min() > 0.6 and predicted.max() < 1.25


def test_newton_schulz_on_a_stack_equals_each_matrix_on_its_own():
    stack = torch.randn(3, 40, 24, generator=torch.Generator().manual_seed(0))
    together = newton_schulz(stack, steps=3)
    for matrix, result in zip(stack, together, strict=True):
        torch.testing.assert_close(result, newton_schulz(matrix, steps=3), rtol=0, atol=1e-6)


def test_muon_and_adamw_steps_equal_torch_optimizers(monkeypatch):
    """Our Muon equals torch.optim.Muon (match-RMS learning rate) with its Newton-Schulz run in fp32 like ours;
    our AdamW equals torch.optim.AdamW; weight decay, momentum and bias correction over several steps."""
    monkeypatch.setattr(
        torch_muon,
        "_zeropower_via_newtonschulz",
        lambda grad, coefficients, steps, eps: newton_schulz(grad, steps, eps),
    )
    torch.manual_seed(0)
    matrix, vector = torch.randn(24, 40), torch.randn(40)
    ours = [matrix.clone().requires_grad_(), vector.clone().requires_grad_()]
    reference = [matrix.clone().requires_grad_(), vector.clone().requires_grad_()]
    optimizer = MuonWithAdamW(
        [
            {"params": [ours[0]], "use_muon": True, "weight_decay": 0.1},
            {"params": [ours[1]], "use_muon": False, "weight_decay": 0.1},
        ],
        lr=0.01,
        betas=(0.9, 0.95),
    )
    muon = torch.optim.Muon([reference[0]], lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW([reference[1]], lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(4):
        gradients = torch.randn(24, 40), torch.randn(40)
        for params in (ours, reference):
            for param, gradient in zip(params, gradients, strict=True):
                param.grad = gradient.clone()
        optimizer.step()
        muon.step()
        adamw.step()
        torch.testing.assert_close(ours[0], reference[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(ours[1], reference[1], rtol=0, atol=1e-6)


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    config = tiny_config(34, optimizer="muon", newton_schulz_steps=3, muon_momentum=0.9)
    model = GPT(config.model)
    optimizer = make_optimizer(model, config.train, "cpu")
    assert [(g["ns_steps"], g["momentum"]) for g in optimizer.param_groups if g["use_muon"]] == [(3, 0.9)]
    names = {id(p): name for name, p in model.named_parameters()}
    muon_names = {names[id(p)] for g in optimizer.param_groups if g["use_muon"] for p in g["params"]}
    adamw_names = {names[id(p)] for g in optimizer.param_groups if not g["use_muon"] for p in g["params"]}
    assert muon_names == {n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2}
    assert "transformer.wte.weight" in adamw_names and "transformer.wpe.weight" in adamw_names
    assert muon_names | adamw_names == set(names.values()) and not muon_names & adamw_names
    with pytest.raises(ValueError, match="Muon updates 2-D matrices only"):
        MuonWithAdamW([{"params": [model.transformer.ln_f.weight], "use_muon": True}], lr=1e-3)


def test_a_muon_run_learns_and_resumes_exactly(tmp_path, data_dir):
    straight = tiny_config(34, max_steps=20, eval_interval=5, optimizer="muon")
    train(data_dir, tmp_path / "straight", straight, progress=False)
    train(
        data_dir, tmp_path / "resumed", tiny_config(34, max_steps=10, decay_steps=20, optimizer="muon"), progress=False
    )
    second_half = tiny_config(34, max_steps=20, decay_steps=20, eval_interval=5, optimizer="muon")
    train(data_dir, tmp_path / "resumed", second_half, resume=True, progress=False)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert a[20] < a[1] - 0.5
    # the momentum buffers and AdamW moments came back from the checkpoint: the steps after the resume agree
    assert abs(a[11] - b[11]) < 1e-6 and abs(a[20] - b[20]) < 1e-6


def test_muon_is_an_optimizer_choice_with_clear_errors(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="optimizer 'sgd' is not one of: adamw, muon"):
        tiny_config(34, optimizer="sgd")
    with pytest.raises(ConfigError, match="newton_schulz_steps=0 must be a positive integer"):
        tiny_config(34, optimizer="muon", newton_schulz_steps=0)
    with pytest.raises(ConfigError, match=r"muon_momentum=1.0 must lie in \[0, 1\)"):
        tiny_config(34, optimizer="muon", muon_momentum=1.0)
    with pytest.raises(ConfigError, match="the NumPy backend has AdamW only"):
        train(data_dir, tmp_path / "run", tiny_config(34, backend="numpy", optimizer="muon"), progress=False)
