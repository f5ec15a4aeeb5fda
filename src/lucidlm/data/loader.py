"""Batches of (input, target) windows drawn from the memory-mapped token files.

The batch for (seed, split, step, rank, micro-step) is a pure function of those numbers: no hidden state moves
between batches. That is what makes `--resume` exact (the step says where the data was) and lets every DDP
rank draw its own batches without talking to the others. Rank and micro-step combine into one global
micro-batch index, rank * micro_steps + micro_step, so 2 processes with 1 micro-step each draw exactly the
batches that 1 process with 2 micro-steps draws.

Chat data (lucidlm.chat.data) adds a loss mask and the conversations' starts: a window then begins at a
conversation, runs on into the ones after it (packing), and its targets outside the assistant's replies, or
past the split's end, are -1, which the loss ignores. Preference data (lucidlm.chat.preferences) is chat data
whose sequences come in pairs, chosen then rejected: a batch of B pairs is 2 B windows, the chosen replies first,
each window's targets ending with its own sequence.

A tuning objective (DPO, GRPO) may replay supervised data beside its own batches (TrainConfig.replay_data): each
training batch then comes as `Replayed`, the objective's batch and a batch of the replay data for the same step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lucidlm.errors import DataError
from lucidlm.inputs import COUNT, read_json
from lucidlm.tokenizers import Tokenizer

SPLITS = ("train", "val")


META = {
    "tokenizer": str,
    "vocab_size": COUNT,
    "dtype": str,
    "train_tokens": COUNT,
    "val_tokens": COUNT,
    "sources": [{"sha256": str}],
    "chat?": {"train_starts": COUNT, "val_starts": COUNT},
}
TOKEN_DTYPES = ("uint16", "uint32")


def read_meta(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "meta.json"
    if Path(data_dir).is_file():  # a command that takes text files has prepared one before it gets here
        raise DataError(
            f"{data_dir} is a file, and this command reads a prepared data directory; prepare it first with "
            f"`lucidlm data prepare --input {data_dir} --tokenizer char --out DATA_DIR`"
        )
    if not path.exists():
        raise DataError(
            f"{data_dir} is not a prepared data directory (no meta.json); create one with "
            "`lucidlm data prepare` or pass a text file to --data"
        )
    meta = read_json(path, META, DataError, "prepare the data again")
    if meta["dtype"] not in TOKEN_DTYPES:
        raise DataError(f"{path} is damaged: dtype must be one of {', '.join(TOKEN_DTYPES)}; prepare the data again")
    return meta


def open_split(data_dir: str | Path, split: str, part: str = "") -> np.memmap:
    """A split's token file, or with `part` its "mask" (one byte a token) or "starts" (uint64 offsets) file."""
    meta = read_meta(data_dir)
    path = Path(data_dir) / (f"{split}.{part}.bin" if part else f"{split}.bin")
    if not path.exists():
        raise DataError(f"{path} is missing; prepare the data again with `lucidlm data prepare`")
    dtype = {"": np.dtype(meta["dtype"]).newbyteorder("<"), "mask": np.dtype("u1"), "starts": np.dtype("<u8")}[part]
    expected = meta["chat"][f"{split}_starts"] if part == "starts" else meta[f"{split}_tokens"]
    if path.stat().st_size % dtype.itemsize or path.stat().st_size // dtype.itemsize != expected:
        what = "window starts" if part == "starts" else "tokens"
        raise DataError(f"{path} does not hold the {expected} {what} meta.json promises; prepare the data again")
    data = np.memmap(path, dtype=dtype, mode="r")
    if not part and len(data) and int(data.max()) >= meta["vocab_size"]:  # read once: a damaged or foreign file
        raise DataError(
            f"{path} holds token id {int(data.max())}, outside the vocabulary of {meta['vocab_size']} that "
            "meta.json gives; prepare the data again"
        )
    return data


def opening_words(tokenizer: Tokenizer, data_dir: str | Path) -> str:
    """A prompt the model can read, for the "Next:" hint after training: the start of its data's first line."""
    text = tokenizer.decode(open_split(data_dir, "train")[:64].tolist())
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    words = line[:24].rsplit(" ", 1)[0] if len(line) > 24 else line
    return words or text[:1]


def is_chat_data(data_dir: str | Path) -> bool:
    return "chat" in read_meta(data_dir)


def data_kind(data_dir: str | Path) -> str:
    """ "text", "chat", "preferences" (chat data in chosen/rejected pairs) or "tasks" (prompts and answers)."""
    meta = read_meta(data_dir)
    return next((kind for kind in ("preferences", "tasks") if meta.get(kind)), "chat" if "chat" in meta else "text")


class BatchLoader:
    """Random windows of `block_size + 1` tokens; `batch(split, step)` is deterministic."""

    def __init__(
        self,
        data_dir: str | Path,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        micro_steps: int = 1,
        device: str | torch.device = "cpu",
    ):
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self.rank, self.micro_steps = rank, micro_steps
        self.device = torch.device(device)
        self.splits = {split: open_split(data_dir, split) for split in SPLITS}
        self.masks = self.starts = self.ends = None
        self.pairs = data_kind(data_dir) == "preferences"
        if is_chat_data(data_dir):
            self.masks = {split: open_split(data_dir, split, "mask") for split in SPLITS}
            self.starts = {split: open_split(data_dir, split, "starts") for split in SPLITS}
        if self.pairs:  # where each sequence ends: the next one's start
            self.ends = {
                split: np.append(self.starts[split][1:], len(self.splits[split])).astype(np.int64) for split in SPLITS
            }
        for split, tokens in self.splits.items():
            if self.starts is None and len(tokens) < block_size + 1:
                raise DataError(
                    f"the {split} split of {data_dir} has {len(tokens)} tokens, fewer than block_size + 1 = "
                    f"{block_size + 1}; give more text or lower the context (--set block_size=N)"
                )
        self.window = np.arange(block_size + 1)

    def val_batches(self, asked: int) -> int:
        """How many validation batches an evaluation scores: as many as asked."""
        return asked

    def offsets(self, split: str, step: int, micro_step: int = 0) -> np.ndarray:
        """Where each window of the batch starts in the split's tokens (for pairs, the indices of the sequences:
        the chosen ones, then the rejected ones)."""
        index = self.rank * self.micro_steps + micro_step
        rng = np.random.default_rng([self.seed, SPLITS.index(split), step, index])
        if self.pairs:
            chosen = 2 * rng.integers(0, len(self.starts[split]) // 2, size=self.batch_size)
            return np.concatenate([chosen, chosen + 1])
        if self.starts is not None:
            return self.starts[split][rng.integers(0, len(self.starts[split]), size=self.batch_size)].astype(np.int64)
        return rng.integers(0, len(self.splits[split]) - self.block_size, size=self.batch_size)

    def batch(self, split: str, step: int, micro_step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.splits[split]
        offsets = self.offsets(split, step, micro_step)
        if self.pairs:
            ends = self.ends[split][offsets][:, None]
            offsets = self.starts[split][offsets].astype(np.int64)
        else:
            ends = len(tokens)
        index = offsets[:, None] + self.window  # (B, T + 1)
        inside = index < ends
        index = np.minimum(index, len(tokens) - 1)
        windows = tokens[index].astype(np.int64)
        inputs, targets = windows[:, :-1], windows[:, 1:]  # (B, T), (B, T)
        if self.masks is not None:  # a target is learned where the mask says so, and never past the split's end
            learned = inside[:, 1:] & (self.masks[split][index[:, 1:]] == 1)
            targets = np.where(learned, targets, -1)
        pair = torch.from_numpy(np.stack([inputs, targets]))  # (2, B, T)
        if self.device.type == "cuda":
            pair = pair.pin_memory().to(self.device, non_blocking=True)
        return pair[0], pair[1]


@dataclass
class Replayed:
    """A training batch of a tuning objective (`batch`: pairs, prompts) and a batch of replay data (`replay`: the
    (inputs, targets) of text or chat data) whose next-token loss joins the objective's in the same step."""

    batch: Any
    replay: tuple[torch.Tensor, torch.Tensor]
