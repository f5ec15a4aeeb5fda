"""Weights between the NumPy GPT and the PyTorch GPT. The parameter names are the same on both sides, so this
is a copy, not a conversion; a NumPy-trained model samples in PyTorch and the other way round."""

from __future__ import annotations

import numpy as np

from lucidlm.scratch.gpt import NumpyGPT


def to_torch(model: NumpyGPT):
    """A PyTorch GPT (of the same dtype) holding the NumPy model's weights."""
    import torch

    from lucidlm.model import GPT

    torch_model = GPT(model.config).to(torch.float64 if model.dtype == np.float64 else torch.float32)
    torch_model.load_saved_state({name: torch.from_numpy(value.copy()) for name, value in model.params.items()})
    return torch_model.eval()


def from_torch(torch_model, dtype: type = np.float32) -> NumpyGPT:
    """A NumPy GPT holding the PyTorch model's weights."""
    model = NumpyGPT(torch_model.config, dtype=dtype)
    state = torch_model.state_for_saving()
    for name in model.params:
        model.params[name] = state[name].detach().cpu().numpy().astype(dtype)
    return model
