"""Looking inside a trained model: what it predicts at each layer, which heads copy, what breaks without them.

Every analysis here reads or changes the forward pass through its hook points (model/hooks.py), so it works
for every model lucidlm runs, a run you trained or a Hub model (`hf:DIR`):

- `logit_lens`: the residual stream after each layer read out through the final norm and the unembedding
  (nostalgebraist, 2020): the top tokens per layer and position, and where the model's own final prediction
  stands at each layer (its probability and rank), with the KL divergence of each layer's reading from the
  output.
- `head_scores`: previous-token, duplicate-token and induction scores of every head, from its attention on
  random tokens repeated once (Olsson et al., 2022): an induction head attends from a token's second copy to
  the token that followed its first copy.
- `ablation`: each head's and each MLP's worth, as the loss its removal adds over a text (zero-ablation, or
  mean-ablation: its output replaced by its mean over the text).
- `direct_logit_attribution`: each head's and each MLP's direct contribution to one token's logit (or to the
  difference of two tokens' logits) at one position, through the final norm's scale as the pass computed it.
- `patching`: a clean and a corrupted prompt of equal length; the clean run's residual stream patched into
  the corrupted run at one (layer, position) at a time, and each head's output likewise, as the fraction of
  the clean logit difference it restores.

Shapes: L layers, H heads, T positions, V the vocabulary.
"""

from lucidlm.lens.analyses import (
    ablation,
    attention_scores,
    direct_logit_attribution,
    head_scores,
    logit_lens,
    patching,
    read_out,
    repeated_tokens,
)
from lucidlm.lens.results import Ablation, Attribution, HeadScores, LensResult, LogitLens, Patching, one_token

__all__ = [
    "Ablation",
    "Attribution",
    "HeadScores",
    "LensResult",
    "LogitLens",
    "Patching",
    "ablation",
    "attention_scores",
    "direct_logit_attribution",
    "head_scores",
    "logit_lens",
    "one_token",
    "patching",
    "read_out",
    "repeated_tokens",
]
