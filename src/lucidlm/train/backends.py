"""What the trainer drives: a model and its optimizer, in PyTorch or in NumPy.

The training loop (trainer.py) is the same for both: it asks a backend to take a step on some batches at some
learning rate, to score validation batches, and to hand over or take back its state for checkpoints.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel

from lucidlm.data.loader import Replayed
from lucidlm.device import autocast, training_compile, training_precision, use_compile_cache
from lucidlm.errors import CheckpointError, ConfigError
from lucidlm.model import GPT
from lucidlm.model.lora import adapters_off, add_lora
from lucidlm.run_config import RunConfig, TrainConfig
from lucidlm.tokenizers import Tokenizer
from lucidlm.train.distributed import Distributed
from lucidlm.train.objectives import DPO, NextToken, Objective
from lucidlm.train.optim import make_optimizer
from lucidlm.train.rl import GRPO, TaskBatch

Batch = tuple[torch.Tensor, torch.Tensor]


class TorchBackend:
    """The PyTorch GPT with AdamW or Muon, on any device, with bf16 autocast where the device does bf16 products
    fast (device.training_precision) and its blocks compiled where that pays (device.training_compile)."""

    def __init__(self, config: RunConfig, device: torch.device, group: Distributed, tokenizer: Tokenizer | None = None):
        """`tokenizer`: the data's, which GRPO's rewards read replies with (the other objectives need none)."""
        self.device = device
        self.precision, self.precision_reason = training_precision(device, config.train.dtype)
        self.model_config = config.model
        self.model = GPT(config.model).to(device)
        train = config.train
        self.objective = make_objective(train, tokenizer)
        self.replay_coef = train.replay_coef
        # The objective's frozen reference, the model training starts from (load_weights). A LoRA run whose
        # embeddings stay frozen needs no copy: its reference is the model with the adapters off.
        self.needs_reference = self.objective.needs_reference
        self.reference: GPT | None = None
        self.metrics: dict[str, float] = {}  # what the last step reported beside its loss
        self.lora = bool(train.lora_rank)
        if self.lora:  # the model is frozen but for its adapters (and, for new tokens, its embeddings)
            self.trainable = add_lora(
                self.model, train.lora_rank, train.lora_alpha, train.lora_targets, train.lora_embeddings
            )
        self.optimizer = make_optimizer(self.model, train, device.type)
        self.compiled, self.compile_reason = training_compile(device, train.compile, train.max_steps, train.time_budget)
        if train.objective == "grpo" and self.compiled:
            self.compiled, self.compile_reason = False, "GRPO's batches change shape every step; the blocks run eager"
        if self.compiled:
            self.compile_cache = use_compile_cache()
            self.model.compile_blocks()
        self.forward = self.model
        self.ddp = None
        if group.enabled:
            device_ids = (
                [device.index if device.index is not None else group.local_rank] if device.type == "cuda" else None
            )
            self.ddp = DistributedDataParallel(self.forward, device_ids=device_ids)
            self.forward = self.ddp

    def objective_loss(self, batch: Batch | TaskBatch | Replayed) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """What a step minimises on one batch (the objective's loss), and what it reports beside the loss."""
        if isinstance(batch, Replayed):  # the objective's loss, plus the replay data's next-token loss
            loss, metrics = self.objective.loss(self, batch.batch)
            replay_loss = self.forward(*batch.replay)[1]
            metrics["replay_loss"] = replay_loss.detach()
            return loss + self.replay_coef * replay_loss, metrics
        return self.objective.loss(self, batch)

    @torch.no_grad()
    def reference_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen reference's logits (B, T, V): DPO's and GRPO's KL penalty's model."""
        if self.reference is not None:
            return self.reference(x)[0]
        with adapters_off(self.model):
            return self.model(x)[0]

    def train_step(self, batches: list[Batch | TaskBatch | Replayed], lr: float, grad_clip: float) -> float:
        """One optimizer step on the mean gradient of `batches` (gradient accumulation); returns the mean loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, torch.Tensor] = {}
        for micro_step, batch in enumerate(batches):
            # Under DDP, gradients are averaged across processes once, on the last micro-step.
            last = micro_step == len(batches) - 1
            with autocast(self.device, self.precision), self.ddp.no_sync() if self.ddp and not last else nullcontext():
                loss, metrics = self.objective_loss(batch)
                (loss / len(batches)).backward()
            loss_sum += loss.detach()
            for name, value in metrics.items():
                metric_sums[name] = metric_sums.get(name, 0) + value
        self.metrics = {name: float(value) / len(batches) for name, value in metric_sums.items()}
        if grad_clip > 0:
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        else:  # the norm alone, for the logs: one pass over the gradients
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            self.grad_norm = torch.nn.utils.get_total_norm(grads)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum.item() / len(batches)

    def compile_now(self, batch: Batch) -> float:
        """Seconds spent compiling the blocks on one forward and backward pass over `batch`, whose gradients are
        thrown away, before the training clock starts: a time budget then buys training steps alone, cold
        compile cache or warm. The random state is put back, so the run is the one it would have been."""
        started = time.perf_counter()
        random_state = torch.get_rng_state()
        x, y = batch
        with autocast(self.device, self.precision), self.ddp.no_sync() if self.ddp else nullcontext():
            self.forward(x, y)[1].backward()
        self.optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(random_state)
        return time.perf_counter() - started

    @torch.no_grad()
    def eval_scores(self, batch: Batch | TaskBatch) -> dict[str, float]:
        """{"loss": the objective's loss on one batch, and what it reports beside it} (GRPO: its pass@1)."""
        self.model.eval()
        with autocast(self.device, self.precision):
            scores = self.objective.scores(self, batch)
        self.model.train()
        return scores

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        """(weights, optimizer moments and RNG state as tensors, the optimizer's settings as JSON)."""
        optimizer = self.optimizer.state_dict()
        tensors = {
            f"state.{index}.{key}": value.detach().cpu().contiguous()
            for index, moments in optimizer["state"].items()
            for key, value in moments.items()
        }
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        weights = self.model.state_for_saving()
        if self.lora:  # a LoRA checkpoint holds what training changed; the base stays where init_from says
            weights = {name: weights[name] for name in self.trainable}
        weights = {name: t.detach().cpu().contiguous() for name, t in weights.items()}
        return weights, tensors, {"param_groups": optimizer["param_groups"]}

    def close(self) -> None:
        """Drop the DDP wrapper before the process group goes (its reducer must not outlive the group), and the
        compiled blocks: the model handed back is the plain one."""
        self.ddp = None
        self.forward = self.model
        self.model.compiled_blocks = None

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """The weights training starts from: the whole model, or, for LoRA, the frozen base (the adapters keep
        their initialisation)."""
        try:
            self.model.load_saved_state(weights, partial=self.lora)
        except ValueError as exc:
            raise CheckpointError(f"the initial weights do not fit the model ({exc})") from None
        frozen_base = self.lora and not self.model.transformer.wte.weight.requires_grad
        if self.needs_reference and not frozen_base:
            self.reference = GPT(self.model_config).to(self.device)
            self.reference.load_saved_state(weights)
            self.reference.requires_grad_(False).eval()

    def restore(self, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], extra: dict) -> None:
        try:
            self.model.load_saved_state(weights, partial=self.lora)
            moments: dict[int, dict[str, torch.Tensor]] = {}
            for name, value in tensors.items():
                if name.startswith("state."):
                    _, index, key = name.split(".", 2)
                    moments.setdefault(int(index), {})[key] = value
            self.optimizer.load_state_dict({"state": moments, "param_groups": extra["param_groups"]})
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"the checkpoint does not fit this model and optimizer ({exc})") from None
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])


class NumpyBackend:
    """lucidlm.scratch: the GPT with hand-written backward passes and AdamW, in NumPy, on the CPU."""

    def __init__(self, config: RunConfig, device: torch.device, group: Distributed, tokenizer: Tokenizer | None = None):
        from lucidlm.scratch import AdamW, NumpyGPT, check_supported

        if device.type != "cpu":
            raise ConfigError(f"the NumPy backend runs on the CPU only, not {device}; use --device cpu")
        if group.enabled:
            raise ConfigError("the NumPy backend runs in one process; launch it without torchrun")
        check_supported(config.model)  # first: its message names the preset that suits the NumPy backend
        if config.train.optimizer != "adamw":
            raise ConfigError("the NumPy backend has AdamW only; set optimizer=adamw or use --backend torch")
        train = config.train
        self.precision, self.precision_reason = "fp32", "the NumPy backend computes in float32"
        self.compiled, self.compile_reason = False, "the NumPy backend runs NumPy, which torch.compile does not"
        self.model = NumpyGPT(config.model, seed=train.seed)
        self.metrics: dict[str, float] = {}
        self.optimizer = AdamW(self.model.params, train.lr, (train.beta1, train.beta2), weight_decay=train.weight_decay)

    def close(self) -> None:
        """Nothing to release: the NumPy backend runs in one process."""

    def train_step(self, batches: list[Batch], lr: float, grad_clip: float) -> float:
        from lucidlm.scratch import clip_grad_norm

        total_loss, grads = 0.0, None
        for x, y in batches:
            _, loss = self.model.forward(x.numpy(), y.numpy())
            step_grads = self.model.backward()
            total_loss += loss
            if grads is None:
                grads = step_grads
            else:
                for name, grad in step_grads.items():
                    grads[name] += grad
        if len(batches) > 1:
            for grad in grads.values():
                grad /= len(batches)
        self.grad_norm = clip_grad_norm(grads, grad_clip if grad_clip > 0 else math.inf)  # inf: the norm alone
        self.optimizer.lr = lr
        self.optimizer.step(grads)
        return total_loss / len(batches)

    def eval_scores(self, batch: Batch) -> dict[str, float]:
        x, y = batch
        loss = self.model.forward(x.numpy(), y.numpy())[1]
        self.model.caches = None
        return {"loss": loss}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        moments = {f"exp_avg.{name}": torch.from_numpy(m) for name, m in self.optimizer.exp_avg.items()}
        moments |= {f"exp_avg_sq.{name}": torch.from_numpy(v) for name, v in self.optimizer.exp_avg_sq.items()}
        weights = {name: torch.from_numpy(p) for name, p in self.model.params.items()}
        return weights, moments, {"adam_step": self.optimizer.step_count}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        try:
            for name, param in self.model.params.items():
                param[...] = weights[name].numpy()
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"the initial weights do not fit the NumPy model ({exc})") from None

    def restore(self, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], extra: dict) -> None:
        self.load_weights(weights)
        try:
            for name in self.model.params:
                self.optimizer.exp_avg[name][...] = tensors[f"exp_avg.{name}"].numpy()
                self.optimizer.exp_avg_sq[name][...] = tensors[f"exp_avg_sq.{name}"].numpy()
            self.optimizer.step_count = extra["adam_step"]
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"the checkpoint does not fit the NumPy backend's model (missing {exc})") from None


BACKENDS = {"torch": TorchBackend, "numpy": NumpyBackend}


def make_backend(
    config: RunConfig, device: torch.device, group: Distributed, tokenizer: Tokenizer
) -> TorchBackend | NumpyBackend:
    return BACKENDS[config.train.backend](config, device, group, tokenizer)


def make_objective(train: TrainConfig, tokenizer: Tokenizer | None) -> Objective:
    """What a step minimises, by the `objective` setting (`tokenizer`: the data's, which GRPO's rewards read)."""
    if train.objective == "dpo":
        return DPO(train.dpo_beta, train.dpo_nll)
    if train.objective == "grpo":
        return GRPO(tokenizer, train)
    return NextToken()
