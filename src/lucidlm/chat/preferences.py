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

from lucidlm.chat.data import RecordKind, conversation_problem, encode_conversation, read_conversations
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


class Preferences(RecordKind):
    """`data prepare --preferences`, for objective=dpo. A pair either of whose sequences is longer than `context` +
    1 tokens is dropped (cutting a reply would change what is compared)."""

    unit, total = "pair", "pairs"

    def read(self, path, line_limit):
        return list(read_conversations(path, extra_keys=(*REPLIES, *NOTES), line_limit=line_limit))

    def counts(self):
        return {"pairs": 0, "dropped": 0}

    def add(self, tokenizer, record, context, where, split, name, counts):
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
            return
        for ids, mask in sequences:
            split.add(ids, mask)

    def empty_split(self, path, name, counts, context):
        return (
            f"{path}: the {name} split has no pair ({counts['pairs']} read, {counts['dropped']} longer than "
            f"the context of {context}); give more pairs"
        )

    def written(self, splits, counts, context):
        chat_meta, files, _ = super().written(splits, counts, context)
        return chat_meta, files, {"preferences": True}
