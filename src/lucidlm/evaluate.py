"""What a model is worth: its loss over a whole split, and its replies on tasks with known answers.

The loss: every token scored exactly once, each with up to `block_size` tokens of context. The split is cut
into consecutive windows of `block_size` tokens; the last window is moved back so that it ends at the last
token, and only its targets that no earlier window scored are counted. This is the number to compare between
models of one tokenizer; the trainer's periodic estimate uses a few random batches instead.

Bits per byte compare models whose tokenizers differ (char, word, BPE, a Hub model's): the same loss spread
over the bytes of the text the scored tokens stand for, in bits. A tokenizer whose tokens are longer has a
higher loss per token and the same text to predict, so nats per token x tokens / bytes / ln 2 puts every
tokenizer on one scale (nanochat reports its val bpb this way).

Task evals (`lucidlm eval --tasks FILE.jsonl`): each record is a conversation and the one right reply. A free
reply is generated greedily through the model's chat template and scored by exact and normalised match; a
multiple-choice record is scored by which choice the model finds most likely, as lm-evaluation-harness
scores ARC and MMLU.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lucidlm.data.corpus import iter_text
from lucidlm.data.loader import open_split
from lucidlm.decode import SamplingConfig
from lucidlm.device import autocast
from lucidlm.errors import ConfigError, DataError
from lucidlm.generate import generate_text
from lucidlm.model import GPT
from lucidlm.tokenizers import Tokenizer, load_tokenizer


@torch.inference_mode()
def split_loss(model: GPT, tokens: np.ndarray, batch_size: int = 32) -> tuple[float, int]:
    """(mean cross-entropy in nats per token, number of tokens scored) over `tokens`."""
    T = model.config.block_size
    device = model.lm_head.weight.device
    n_targets = len(tokens) - 1
    if n_targets < 1:
        raise ValueError("a split needs at least two tokens to score one")
    starts = list(range(0, n_targets, T))
    total, count = 0.0, 0
    for first in range(0, len(starts), batch_size):
        group = starts[first : first + batch_size]
        # A window starting at s scores targets s+1 .. s+T; the last one is shifted back to stay in range.
        shifted = [min(s, max(n_targets - T, 0)) for s in group]
        length = min(T, n_targets)
        index = np.asarray(shifted)[:, None] + np.arange(length + 1)
        window = torch.from_numpy(tokens[index].astype(np.int64)).to(device)
        x, y = window[:, :-1], window[:, 1:]
        skip = torch.tensor([s - w for s, w in zip(group, shifted, strict=True)], device=device)
        # Targets a previous window already scored get the ignore index -1.
        y = torch.where(torch.arange(length, device=device)[None, :] < skip[:, None], -1, y)
        with autocast(device):
            logits, _ = model(x)
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1, reduction="sum"
        )
        total += losses.item()
        count += int((y >= 0).sum())
    return total / count, count


def data_to_score(tokenizer: Tokenizer, data: str | Path, split: str = "val") -> tuple[np.ndarray, str, list[str]]:
    """(tokens, their name, the words read as <unk>) for `lucidlm eval --data`: a text file encoded with the
    model's tokenizer (symbols its vocabulary lacks refused, unless it reads them as <unk>), or a prepared data
    directory's split, which must have been prepared with this tokenizer or one it extends."""
    data, unknown = Path(data), []
    if data.is_file():
        text = "".join(iter_text(data))
        unknown = tokenizer.unknown_symbols(text)
        if unknown and tokenizer.unknown_token is None:
            raise DataError(
                f"{data} contains symbols the model's vocabulary lacks: {' '.join(map(repr, unknown[:20]))}"
            )
        tokens, name = np.asarray(next(tokenizer.encode_stream([text]))), str(data)
    else:
        if not tokenizer.extends(load_tokenizer(data / "tokenizer.json")):
            raise ConfigError(f"{data} was prepared with another tokenizer than the model's")
        tokens, name = open_split(data, split), f"{data} ({split})"
    if len(tokens) < 2:
        raise DataError(f"{name} has fewer than 2 tokens; nothing to score")
    return tokens, name, unknown


def text_bytes(tokenizer: Tokenizer, tokens: np.ndarray) -> int:
    """The UTF-8 bytes of the text that tokens[1:] (the scored targets) stand for: the whole text's bytes
    less the first token's, decoded at once so that a character split across tokens counts once."""
    ids = np.asarray(tokens).tolist()
    return len(tokenizer.decode(ids).encode("utf-8")) - len(tokenizer.decode(ids[:1]).encode("utf-8"))


def bits_per_byte(loss: float, tokens: int, n_bytes: int) -> float:
    """A loss of `loss` nats per token over `tokens` tokens that stand for `n_bytes` bytes of text, in bits a byte."""
    return loss * tokens / n_bytes / math.log(2)


def tokens_per_byte(tokenizer: Tokenizer, tokens: np.ndarray, most: int = 2**20) -> float | None:
    """Tokens per byte of text, read off the first `most` tokens of a split: what turns the trainer's
    validation estimate into bits per byte. None for a text of no bytes."""
    sample = np.asarray(tokens[: most + 1])
    n_bytes = text_bytes(tokenizer, sample) if len(sample) > 1 else 0
    return (len(sample) - 1) / n_bytes if n_bytes else None


def score(model: GPT, tokens: np.ndarray, tokenizer: Tokenizer) -> dict:
    """The loss (nats a token), its perplexity, the number of tokens scored, and the same loss in bits per
    byte of the text they stand for (None for a text of no bytes: special tokens alone)."""
    loss, count = split_loss(model, tokens)
    n_bytes = text_bytes(tokenizer, tokens)
    bpb = bits_per_byte(loss, count, n_bytes) if n_bytes else None
    return {"loss": loss, "perplexity": float(np.exp(loss)), "tokens": count, "bytes": n_bytes, "bits_per_byte": bpb}


# --- task evals: a model's replies scored against the right answers ------------------------------------------


@dataclass
class TaskRecord:
    task: str
    messages: list[dict[str, str]]
    answer: str
    choices: list[str] | None = None  # multiple choice: the answer is one of these
    line: int = 0  # where it stands in its file, for errors that name it


def preference_pairs(records: Sequence[TaskRecord], replies: Sequence[dict], source: str) -> list[dict]:
    """Each wrong reply as a preference pair for DPO, in the form `data prepare --preferences` reads: the
    record's answer chosen, the model's reply rejected."""
    return [
        {
            "source": source,
            "task": record.task,
            "messages": record.messages,
            "chosen": record.answer,
            "rejected": reply["reply"],
        }
        for record, reply in zip(records, replies, strict=True)
        if reply["reply"] != record.answer
    ]


def read_task_records(path: str | Path, line_limit: int | None = None) -> list[TaskRecord | None]:
    """`{"messages": [...], "answer": "..."}` lines, with an optional "task" (the table's row; default: the
    file's name) and "choices" (multiple choice, the answer among them). A bad line is a DataError naming it;
    one longer than `line_limit` bytes is None, skipped unread."""
    from lucidlm.chat.data import read_conversations

    records: list[TaskRecord | None] = []
    for number, record in read_conversations(path, extra_keys=("answer", "choices", "task"), line_limit=line_limit):
        if record is None:
            records.append(None)
            continue
        answer, choices, task = record.get("answer"), record.get("choices"), record.get("task", Path(path).stem)
        where = f"{path} line {number}"
        if not isinstance(answer, str):
            raise DataError(f'{where}: "answer" must be the reply\'s text, a string')
        if not isinstance(task, str):
            raise DataError(f'{where}: "task" must be a string')
        if choices is not None:
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                raise DataError(f'{where}: "choices" must be a list of at least two strings')
            if answer not in choices:
                raise DataError(f"{where}: the answer {answer!r} is not one of the choices")
        if record["messages"][-1]["role"] == "assistant":
            raise DataError(f"{where}: the conversation ends with the assistant's turn; end it where the reply goes")
        records.append(TaskRecord(task, record["messages"], answer, choices, number))
    if not records:
        raise DataError(f"{path} holds no task records")
    return records


def normalise_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


@torch.inference_mode()
def reply_log_likelihood(model: GPT, prompt: list[int], reply: list[int]) -> float:
    """log p(reply | prompt), summed over the reply's tokens (the context cut to the model's window from the left)."""
    ids = (prompt + reply)[-(model.config.block_size + 1) :]
    device = model.lm_head.weight.device
    x = torch.tensor([ids[:-1]], device=device)
    with autocast(device):
        logits, _ = model(x)
    logprobs = F.log_softmax(logits[0].float(), dim=-1)
    targets = torch.tensor(ids[1:], device=device)
    picked = logprobs[torch.arange(len(targets), device=device), targets]
    return float(picked[-len(reply) :].sum())


def score_tasks(
    model: GPT,
    tokenizer: Tokenizer,
    records: list[TaskRecord],
    max_new_tokens: int = 64,
    progress: bool | None = None,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    tools: Sequence[str] = (),
) -> dict:
    """Per task: exact match (the reply, stripped, equals the answer; greedy unless `sampling` says otherwise),
    normalised match, and for multiple choice the accuracy of the choice with the highest log-likelihood (as
    ARC and MMLU are scored). With `tools` (built-in ones, chat/tools.py), the model is offered them and the
    calls it makes are run, their results fed back, until it replies. Returns {"tasks": {task: {...}},
    "all": {...}, "replies": [...]} (each reply with the tool calls it made)."""
    from lucidlm.chat.template import chat_prompt
    from lucidlm.chat.tools import built_in_tools, reply_with_tools

    definitions, functions = built_in_tools(tools)

    def respond(messages: list[dict]) -> str:
        prompt, stop = chat_prompt(tokenizer, messages, definitions)
        return "".join(generate_text(model, tokenizer, prompt, max_new_tokens, sampling, stop, generator)).strip()

    sampling = sampling or SamplingConfig(temperature=0.0)
    rows: dict[str, dict[str, float]] = {}
    replies = []
    for record in tqdm(records, desc="scoring", unit="record", disable=None if progress is None else not progress):
        row = rows.setdefault(record.task, {"records": 0, "exact": 0, "normalised": 0})
        row["records"] += 1
        calls = []
        if record.choices is not None:
            prompt, _ = chat_prompt(tokenizer, record.messages)
            end = [tokenizer.eos_ids[0]] if tokenizer.eos_ids else []
            scores = [reply_log_likelihood(model, prompt, tokenizer.encode_ordinary(c) + end) for c in record.choices]
            reply = record.choices[max(range(len(scores)), key=scores.__getitem__)]
        else:
            reply, added = reply_with_tools(respond, record.messages, functions, rounds=4 if tools else 0)
            calls = [turn for turn in added if turn["role"] != "assistant" or "tool_calls" in turn]
        row["exact"] += reply == record.answer
        row["normalised"] += normalise_answer(reply) == normalise_answer(record.answer)
        replies.append({"task": record.task, "reply": reply, "answer": record.answer, "tool_turns": calls})
    total = {key: sum(row[key] for row in rows.values()) for key in ("records", "exact", "normalised")}
    for row in [*rows.values(), total]:
        row["exact_match"] = row.pop("exact") / row["records"]
        row["normalised_match"] = row.pop("normalised") / row["records"]
    return {"tasks": rows, "all": total, "replies": replies}
