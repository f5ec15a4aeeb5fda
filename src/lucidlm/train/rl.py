"""Reinforcement learning with verifiable rewards: GRPO on prompts whose answers can be checked.

Task data (`lucidlm data prepare --tasks FILE.jsonl --tokenizer-from RUN`) holds each prompt as the model's chat
template writes it, ready for the reply, and the answer a reward checks. A step of `--set objective=grpo`
(train/objectives.py has the loss):
    draw batch_size prompts (a pure function of the seed and the step, so a resumed run draws the same ones)
    for each, sample group_size replies together (generate.sample_group: one KV cache, a row a reply)
    score each reply: the reward compares it with the answer
    advantages: each reward against its group's mean and spread
    one clipped policy-gradient step on the replies' tokens (the prompt's are not learned), with an optional
    KL penalty to the model the run started from
Each reply's random numbers come from a generator seeded by (seed, step, prompt), so a resume is exact. The
evaluation is pass@1: one greedy reply to every held-out prompt, passed where its reward is the full 1; the
trainer's "val loss" for GRPO is 1 - pass@1, so the best checkpoint is the one that passes most.

GRPO is an objective of `lucidlm train` rather than a command of its own because everything else a run has
(time budgets, resume, checkpoints, LoRA, the progress bar, metrics.jsonl and trackers, torchrun) is the
trainer's already; what differs is where a batch comes from (TaskLoader) and what a step minimises.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lucidlm.chat.data import RecordKind
from lucidlm.chat.template import chat_prompt
from lucidlm.data.loader import open_split
from lucidlm.decode import SamplingConfig
from lucidlm.errors import ConfigError, DataError, LucidError, TokenizerError
from lucidlm.evaluate import read_task_records
from lucidlm.generate import sample_group
from lucidlm.inputs import parse_json
from lucidlm.run_config import TrainConfig
from lucidlm.tokenizers import Tokenizer
from lucidlm.train.objectives import Policy, clipped_policy_loss, group_advantages, token_logprobs

Reward = Callable[[str, str], float]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def exact_reward(reply: str, answer: str) -> float:
    """1 where the reply, stripped, is the answer, else 0."""
    return float(reply.strip() == answer.strip())


def number_reward(reply: str, answer: str) -> float:
    """1 where the reply's last number equals the answer's (as GSM8K's graders read a worked answer), else 0."""
    found, wanted = NUMBER.findall(reply.replace(",", "")), NUMBER.findall(answer.replace(",", ""))
    return float(bool(found and wanted) and math.isclose(float(found[-1]), float(wanted[-1]), rel_tol=1e-9))


REWARDS: dict[str, Reward] = {"exact": exact_reward, "number": number_reward}


def load_reward(name: str) -> Reward:
    """A reward by name: exact, number, or a Python function `module:function` taking (reply, answer) and
    returning a float (the module is imported as Python imports it, the working directory included)."""
    if name in REWARDS:
        return REWARDS[name]
    module_name, _, function_name = name.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"reward={name!r} is one of: {', '.join(REWARDS)}, or a Python function as module:function")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"reward={name}: cannot import {module_name} ({exc})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"reward={name}: {module_name} has no function {function_name}")
    return function


def call_reward(reward: Reward, reply: str, answer: str) -> float:
    try:
        value = float(reward(reply, answer))
    except Exception as exc:  # a user's function: its failure is named, not a traceback from inside the trainer
        raise LucidError(
            f"the reward function failed on the reply {reply[:60]!r} ({type(exc).__name__}: {exc})"
        ) from None
    if not math.isfinite(value):
        raise LucidError(f"the reward function returned {value} for the reply {reply[:60]!r}; return a finite number")
    return value


# --- task data ----------------------------------------------------------------------------------------------


class Tasks(RecordKind):
    """`data prepare --tasks`, for objective=grpo: the prompts of a task file (eval --tasks' records) as the
    model's template writes them, with their answers in {split}.answers.jsonl. A prompt that leaves no room in the
    context for a reply is dropped."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {"train": [], "val": []}

    def read(self, path, line_limit):
        return [(None if record is None else record.line, record) for record in read_task_records(path, line_limit)]

    def add(self, tokenizer, record, context, where, split, name, counts):
        if record.choices is not None:
            raise DataError(f"{where}: a multiple-choice record is for eval --tasks; give an answer alone")
        try:
            prompt, _ = chat_prompt(tokenizer, record.messages)
        except TokenizerError as exc:
            raise DataError(f"{where}: {exc}") from None
        if len(prompt) >= context:
            counts["dropped"] += 1
            return
        split.add(prompt, [0] * len(prompt))
        self.answers[name].append(json.dumps({"answer": record.answer, "task": record.task}) + "\n")

    def empty_split(self, path, name, counts, context):
        return f"{path}: the {name} split has no prompt ({counts['dropped']} longer than the context); give more"

    def written(self, splits, counts, context):
        files = {f"{name}.answers.jsonl": "".join(lines) for name, lines in self.answers.items()}
        tasks = {name: len(split.starts) for name, split in splits.items()}
        return {"context": context, **counts}, files, {"tasks": tasks}


@dataclass
class TaskBatch:
    prompts: list[list[int]]
    answers: list[str]
    seed: int  # seeds each prompt's sampling generator, with the prompt's place in the batch


class TaskLoader:
    """Prompts and answers of task data. `batch("train", step)` draws batch_size prompts at random, a pure
    function of (seed, step, rank, micro-step); `batch("val", 0)` is every held-out prompt, the one batch that
    `val_batches()` counts."""

    def __init__(self, data_dir: str | Path, batch_size: int, seed: int = 0, rank: int = 0, micro_steps: int = 1):
        self.batch_size, self.seed, self.rank, self.micro_steps = batch_size, seed, rank, micro_steps
        self.prompts: dict[str, list[list[int]]] = {}
        self.answers: dict[str, list[str]] = {}
        for split in ("train", "val"):
            tokens = open_split(data_dir, split)
            starts = [int(start) for start in open_split(data_dir, split, "starts")]
            ends = [*starts[1:], len(tokens)]
            self.prompts[split] = [tokens[start:end].tolist() for start, end in zip(starts, ends, strict=True)]
            path = Path(data_dir) / f"{split}.answers.jsonl"
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
                self.answers[split] = [parse_json(line)["answer"] for line in lines]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path} is missing or damaged ({exc}); prepare the data again") from None
            if len(self.answers[split]) != len(starts):
                raise DataError(f"{path} does not hold an answer for each of {len(starts)} prompts; prepare again")

    def val_batches(self, asked: int) -> int:
        return 1

    def batch(self, split: str, step: int, micro_step: int = 0) -> TaskBatch:
        index = self.rank * self.micro_steps + micro_step
        if split == "train":
            rng = np.random.default_rng([self.seed, 0, step, index])
            chosen = rng.integers(0, len(self.prompts[split]), size=self.batch_size).tolist()
            seed = int(rng.integers(0, 2**63))
        else:
            chosen, seed = list(range(len(self.prompts[split]))), 0
        return TaskBatch([self.prompts[split][i] for i in chosen], [self.answers[split][i] for i in chosen], seed)


# --- the step -----------------------------------------------------------------------------------------------


@dataclass
class Rollouts:
    inputs: torch.Tensor  # (N, T): each prompt and its reply, then padding
    targets: torch.Tensor  # (N, T): the reply's tokens, -1 elsewhere
    advantages: torch.Tensor  # (N,)
    rewards: torch.Tensor  # (P, G)
    lengths: list[int]  # each reply's tokens


class GRPO:
    """objective=grpo (train/objectives.py's Objective): the batch is prompts, whose replies it samples and scores
    with the reward (which reads their text, through the tokenizer) before the clipped loss."""

    def __init__(self, tokenizer: Tokenizer, train: TrainConfig):
        self.tokenizer, self.settings = tokenizer, train
        self.reward = load_reward(train.reward)
        self.end_ids = list(tokenizer.eos_ids)
        self.needs_reference = train.kl_coef > 0

    def loss(self, policy: Policy, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sample and score the replies with the model in eval mode, then the clipped objective on them."""
        policy.model.eval()
        rollouts = self.rollouts(policy.model, batch)
        policy.model.train()
        reference = policy.reference_logits if self.needs_reference else None
        return self.clipped_loss(lambda x: policy.forward(x)[0], reference, rollouts)

    def scores(self, policy: Policy, batch: TaskBatch) -> dict[str, float]:
        """The pass@1 of greedy replies, and 1 - pass@1 as the loss."""
        scores = self.pass_at_1(policy.model, batch)
        return {"loss": 1 - scores["pass_at_1"], **scores}

    def reply_text(self, reply: list[int]) -> str:
        if reply and reply[-1] in self.end_ids:
            reply = reply[:-1]
        return self.tokenizer.decode(reply)

    def score(self, reply: list[int], answer: str) -> float:
        return call_reward(self.reward, self.reply_text(reply), answer)

    def rollouts(self, model, batch: TaskBatch) -> Rollouts:
        """Sample a group of replies to each prompt, score them, and lay them out for the loss."""
        settings = self.settings
        sampling = SamplingConfig(temperature=settings.sample_temperature)
        device = model.lm_head.weight.device
        generator = torch.Generator(device=device)
        sequences, rewards, lengths = [], [], []
        for place, (prompt, answer) in enumerate(zip(batch.prompts, batch.answers, strict=True)):
            generator.manual_seed((batch.seed + place) % 2**63)
            room = min(settings.max_reply_tokens, model.config.block_size + 1 - len(prompt))
            replies = sample_group(model, prompt, settings.group_size, room, sampling, generator, self.end_ids)
            rewards.append([self.score(reply, answer) for reply in replies])
            for reply in replies:
                sequences.append((prompt, reply))
                lengths.append(len(reply))
        width = max(len(prompt) + len(reply) for prompt, reply in sequences) - 1
        inputs = torch.zeros(len(sequences), width, dtype=torch.long)
        targets = torch.full((len(sequences), width), -1, dtype=torch.long)
        for row, (prompt, reply) in enumerate(sequences):
            ids = prompt + reply
            inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1])
            targets[row, len(prompt) - 1 : len(ids) - 1] = torch.tensor(reply)
        reward_table = torch.tensor(rewards)  # (P, G)
        advantages = group_advantages(reward_table).flatten()
        return Rollouts(inputs.to(device), targets.to(device), advantages.to(device), reward_table, lengths)

    def clipped_loss(
        self, logits: Callable[[torch.Tensor], torch.Tensor], reference_logits: Callable | None, rollouts: Rollouts
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The clipped objective on the rollouts, from the policy's logits (and the reference's, for the KL
        penalty). On-policy, one step a batch: the old log-probabilities are the current ones (detached), so the
        ratio is 1 and its gradient is the policy gradient."""
        x, y = rollouts.inputs, rollouts.targets
        logprobs = token_logprobs(logits(x), y)  # (N, T)
        reference_logprobs = None if reference_logits is None else token_logprobs(reference_logits(x), y)
        loss, metrics = clipped_policy_loss(
            logprobs,
            logprobs.detach(),
            rollouts.advantages,
            y >= 0,
            self.settings.grpo_clip,
            reference_logprobs,
            self.settings.kl_coef,
        )
        metrics["reward"] = rollouts.rewards.mean()
        metrics["reply_tokens"] = torch.tensor(float(sum(rollouts.lengths)) / len(rollouts.lengths))
        return loss, metrics

    @torch.no_grad()
    def pass_at_1(self, model, batch: TaskBatch) -> dict[str, float]:
        """Greedy replies to the batch's prompts: {"pass_at_1": the fraction whose reward is the full 1,
        "reward": the mean reward} (the means of this batch)."""
        greedy = SamplingConfig(temperature=0.0)
        rewards = []
        for prompt, answer in zip(batch.prompts, batch.answers, strict=True):
            room = min(self.settings.max_reply_tokens, model.config.block_size + 1 - len(prompt))
            reply = sample_group(model, prompt, 1, room, greedy, None, self.end_ids)[0]
            rewards.append(self.score(reply, answer))
        return {"pass_at_1": sum(r >= 1 for r in rewards) / len(rewards), "reward": sum(rewards) / len(rewards)}
