"""Preference data: a conversation and two replies to it, the one people chose and the one they rejected.

A line is `{"messages": [...], "chosen": REPLY, "rejected": REPLY}`, where a reply is the assistant's text, or
the messages that continue the conversation (TRL's conversational form, ending in the assistant's turn); it may
also say where it came from ("source", "task"). `lucidlm eval --tasks FILE --pairs PAIRS.jsonl` writes such
lines from a model's own wrong answers: the right answer chosen, the model's reply rejected. Both
continuations are written through the model's chat template with the mask rules of chat data, except that only
the reply itself is learned: an assistant turn inside `messages` is context. A pair is two sequences, chosen
first, in the data directory of chat data: its `{split}.starts.bin` holds both starts, and meta.json says
"preferences", so that the loader draws pairs and stops each sequence at its end (train/objectives.py scores
the replies under DPO).
"""

from __future__ import annotations

import os

from tqdm import tqdm

from lucidlm.chat.data import (
    ChatSplit,
    chat_tokenizer,
    check_output,
    conversation_problem,
    encode_conversation,
    longest_line,
    read_conversations,
    split_of,
    write_chat_data,
)
from lucidlm.errors import DataError, TokenizerError
from lucidlm.tokenizers import Tokenizer

REPLIES = ("chosen", "rejected")
NOTES = ("source", "task")  # what a line may say of itself beside the pair (`lucidlm eval --pairs` writes both)


def reply_messages(reply: object) -> list[dict] | None:
    """A reply as the messages that continue the conversation, or None where it is neither text nor messages
    ending in the assistant's turn."""
    if isinstance(reply, str):
        return [{"role": "assistant", "content": reply}]
    if isinstance(reply, dict):
        reply = [reply]
    if not isinstance(reply, list) or not reply or conversation_problem({"messages": reply}):
        return None
    return reply if reply[-1]["role"] == "assistant" else None


def encode_reply(tokenizer: Tokenizer, messages: list[dict], reply: list[dict]) -> tuple[list[int], list[int]]:
    """(ids, mask) of the conversation and its reply, the mask 1 on the reply's assistant tokens alone."""
    ids, mask, ends = encode_conversation(tokenizer, [*messages, *reply])
    context_replies = sum(message["role"] == "assistant" for message in messages)
    if context_replies:
        learned_from = ends[context_replies - 1]
        mask = [0] * learned_from + mask[learned_from:]
    return ids, mask


def prepare_preferences(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    tokenizer: Tokenizer,
    context: int,
    val_fraction: float = 0.1,
    force: bool = False,
    progress: bool | None = None,
) -> dict:
    """Encode the pairs of `path` into a data directory for objective=dpo; returns its meta.json. A pair either
    of whose sequences is longer than `context` + 1 tokens is dropped (cutting a reply would change what is
    compared)."""
    check_output(out_dir, val_fraction, force)
    tokenizer = chat_tokenizer(tokenizer)
    splits = {"train": ChatSplit(), "val": ChatSplit()}
    counts = {"pairs": 0, "dropped": 0}
    line_limit = longest_line(tokenizer, context)
    records = list(read_conversations(path, extra_keys=(*REPLIES, *NOTES), line_limit=line_limit))
    disable = None if progress is None else not progress
    for index, (number, record) in enumerate(tqdm(records, desc="encoding", unit="pair", disable=disable)):
        if record is None:  # a line too long to fit the context, skipped unread
            counts["pairs"] += 1
            counts["dropped"] += 1
            continue
        where = f"{path} line {number}"
        sequences = []
        for key in REPLIES:
            reply = reply_messages(record.get(key))
            if reply is None:
                raise DataError(
                    f"{where}: \"{key}\" must be the reply's text, or messages that end in the assistant's turn"
                )
            try:
                sequences.append(encode_reply(tokenizer, record["messages"], reply))
            except TokenizerError as exc:
                raise DataError(f"{where}: {exc}") from None
        if sequences[0] == sequences[1]:
            raise DataError(f"{where}: the chosen and the rejected reply are the same; a pair must differ")
        counts["pairs"] += 1
        if max(len(ids) for ids, _ in sequences) > context + 1:
            counts["dropped"] += 1
            continue
        split = splits[split_of(index, val_fraction)]
        for ids, mask in sequences:
            split.add(ids, mask)
    for name, split in splits.items():
        if not split.starts:
            raise DataError(
                f"{path}: the {name} split has no pair ({counts['pairs']} read, {counts['dropped']} longer than "
                f"the context of {context}); give more pairs"
            )
    learned = {name: sum(split.mask) for name, split in splits.items()}
    chat_meta = {"context": context, **counts, "learned_tokens": learned}
    return write_chat_data(out_dir, force, tokenizer, splits, val_fraction, path, chat_meta, preferences=True)
