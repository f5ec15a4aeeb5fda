"""Chat data: conversations in the OpenAI messages format to token files with a loss mask.

A conversation is a JSON line `{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}]}`,
optionally with the tools it offers (`"tools"`, as OpenAI's fine-tuning files have them), assistant messages
that call them (`"tool_calls"`) and the tools' results (`{"role": "tool", "tool_call_id", "content"}`): a call
is learned like any reply, a result is read.
It is written out through the model's chat template, and each token gets a mask bit: 1 for the tokens of the
assistant's replies and the end-of-turn token after each (what fine-tuning teaches the model to write), 0 for
everything else (what it only reads). Beside `train.bin` and `val.bin` a chat data directory holds
`{split}.mask.bin` (one byte a token) and `{split}.starts.bin` (where each conversation begins, uint64), so
that the loader starts its windows at conversations, not in their middle.

A line may also be `{"text": "..."}`: plain text, every token of it learned, cut into windows of the context.
Mixed in with the conversations, it keeps the model reading and writing what it was pretrained on while it
learns to reply (replay): fine-tuned on replies alone, a small base model soon forgets how text goes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lucidlm.chat.template import (
    CHAT_TOKENS,
    SpecialTextGuard,
    chat_template,
    missing_tool_tokens,
    render_template,
    template_tokens,
)
from lucidlm.chat.tools import tool_calls_problem, tools_problem, uses_tools
from lucidlm.data.prepare import token_dtype, write_array
from lucidlm.errors import ConfigError, DataError, TokenizerError
from lucidlm.inputs import MiB, parse_json, read_lines, sha256_file
from lucidlm.outputs import DATA_DIR, check_target, written_directory
from lucidlm.tokenizers import Tokenizer

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id"}
JSONL_LIMIT = 1024 * MiB  # conversations are held in memory while they are tokenized
MASK_DTYPE = np.dtype("u1")
STARTS_DTYPE = np.dtype("<u8")


def read_conversations(
    path: str | os.PathLike, extra_keys: Sequence[str] = (), text: bool = False, line_limit: int | None = None
) -> Iterator[tuple[int, dict | None]]:
    """(line number, record) for each non-empty line of a messages JSONL file (and, with `text`, of plain
    `{"text": ...}` records). A line that is not a valid record is a DataError naming the file, the line and
    the problem; one longer than `line_limit` bytes is (line number, None), skipped without being held."""
    path = Path(path)
    for number, line in read_lines(path, JSONL_LIMIT, DataError, "give a JSONL file of conversations", line_limit):
        if line is None:
            yield number, None
            continue
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
            raise DataError(f"{path} line {number}: {exc}") from None
        if text and isinstance(record, dict) and "text" in record:
            problem = (
                None
                if set(record) == {"text"} and isinstance(record["text"], str)
                else ('a text line is {"text": "..."} and nothing else')
            )
        else:
            problem = conversation_problem(record, extra_keys)
        if problem:
            raise DataError(f"{path} line {number}: {problem}")
        yield number, record


def conversation_problem(record: object, extra_keys: Sequence[str] = ()) -> str | None:
    """What is wrong with a conversation record, or None."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        return 'expected {"messages": [{"role": ..., "content": ...}, ...]}'
    unknown = sorted(set(record) - {"messages", "tools", *extra_keys})
    if unknown:
        return f'unknown key(s) {", ".join(map(repr, unknown))}; a line holds "messages"'
    if "tools" in record and (problem := tools_problem(record["tools"])):
        return problem
    for index, message in enumerate(record["messages"]):
        if not isinstance(message, dict) or set(message) - MESSAGE_KEYS:
            return f'message {index + 1} is not {{"role": ..., "content": ...}}'
        if message.get("role") not in ROLES:
            return f"message {index + 1} has role {message.get('role')!r}; use one of: {', '.join(ROLES)}"
        if "tool_calls" in message:
            problem = tool_calls_problem(message["tool_calls"])
            if message["role"] != "assistant" or problem:
                return f"message {index + 1}: {problem or 'only an assistant message calls tools'}"
            if message.get("content") is None:
                continue  # a message that only calls tools has no text
        if not isinstance(message.get("content"), str):
            return f'message {index + 1} has no text content ("content" must be a string)'
    return None


def longest_line(tokenizer: Tokenizer, context: int) -> int:
    """The longest JSONL line whose record could fit `context` + 1 tokens, in bytes: each token's text at the
    vocabulary's longest, in JSON's widest escaping (12 bytes a character: a surrogate pair, each as \\uXXXX),
    with room for the keys. A longer line cannot be one conversation that fits, and is skipped unread."""
    longest_token = max(len(tokenizer.decode([i])) for i in range(tokenizer.vocab_size))
    return 12 * longest_token * (context + 1) + 64 * 1024


def encode_conversation(
    tokenizer: Tokenizer, messages: Sequence[dict], tools: Sequence[dict] | None = None
) -> tuple[list[int], list[int], list[int]]:
    """(ids, mask, ends) of a conversation through the tokenizer's chat template: mask 1 on each assistant reply
    and what the template writes after it up to the next message (its end of turn); `ends[i]` is the number of
    ids up to the end of the i-th assistant reply, where a conversation may be cut.

    The template is rendered up to each assistant message (with the generation prompt) and through it; the
    pieces between are encoded one at a time, so every token belongs to one piece."""
    template = chat_template(tokenizer)
    if not template:
        raise ConfigError("the tokenizer has no chat template; prepare chat data with --tokenizer-from a run or hf:DIR")
    special = template_tokens(tokenizer)
    guard = SpecialTextGuard(tokenizer, messages, tools)  # text that spells a special token stays text
    messages, tools = guard.hide(messages), guard.hide(tools)
    ids: list[int] = []
    mask: list[int] = []
    ends: list[int] = []
    done = ""  # the text encoded so far

    def add(text: str, learned: int) -> None:
        nonlocal done
        if not text.startswith(done):
            raise ConfigError(
                "the chat template writes a conversation's start differently once more messages follow; "
                "it cannot mark the replies"
            )
        piece = guard.encode(text[len(done) :])
        ids.extend(piece)
        mask.extend([learned] * len(piece))
        done = text

    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        add(render_template(template, messages[:index], add_generation_prompt=True, tools=tools, **special), 0)
        add(render_template(template, messages[: index + 1], add_generation_prompt=False, tools=tools, **special), 1)
        ends.append(len(ids))
    add(render_template(template, messages, add_generation_prompt=False, tools=tools, **special), 0)
    return ids, mask, ends


@dataclass
class ChatSplit:
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)

    def add(self, ids: list[int], mask: list[int]) -> None:
        self.starts.append(len(self.ids))
        self.ids.extend(ids)
        self.mask.extend(mask)


def chat_tokenizer(tokenizer: Tokenizer, tools: bool = False) -> Tokenizer:
    """The tokenizer chat data is written with: the model's, given lucidlm's turn tokens if it has no template,
    and (with `tools`, for lucidlm's own template) the tool tokens it lacks."""
    if chat_template(tokenizer) is None:
        tokenizer = tokenizer.with_special_tokens(CHAT_TOKENS)
    missing = missing_tool_tokens(tokenizer) if tools else []
    return tokenizer.with_special_tokens(missing) if missing else tokenizer


def check_output(out_dir: str | os.PathLike, val_fraction: float, force: bool) -> None:
    """What every kind of tuning data checks before it reads its file: the split and the output directory."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {val_fraction} must lie strictly between 0 and 1, e.g. 0.1")
    check_target(out_dir, DATA_DIR, force)


def split_of(index: int, val_fraction: float) -> str:
    """ "val" for every record that brings the running count of `val_fraction * i` past a whole number (so that
    the validation split is spread through the file), "train" for the others."""
    return "val" if int((index + 1) * val_fraction) > int(index * val_fraction) else "train"


def fit_to_context(
    ids: list[int], mask: list[int], ends: list[int], context: int
) -> tuple[list[int], list[int]] | None:
    """The conversation cut after its last assistant reply that fits in `context` tokens (None if none does)."""
    if len(ids) <= context:
        return ids, mask
    fitting = [end for end in ends if end <= context]
    if not fitting:
        return None
    return ids[: fitting[-1]], mask[: fitting[-1]]


class RecordKind:
    """One kind of tuning record (conversations here; preference pairs in chat/preferences.py, tasks in
    train/rl.py): how its file is read and how one record becomes the sequences of its split."""

    unit = "record"  # what the progress bar counts
    total: str | None = None  # the counter of records read, unread ones included, if the kind keeps one

    def read(self, path: str | os.PathLike, line_limit: int) -> list[tuple[int, object]]:
        """(line number, record) for each line; None for a line too long for the context, skipped unread."""
        raise NotImplementedError

    def tokenizer(self, tokenizer: Tokenizer, records: list[tuple[int, object]]) -> Tokenizer:
        return chat_tokenizer(tokenizer)

    def counts(self) -> dict[str, int]:
        return {"dropped": 0}

    def add(
        self, tokenizer: Tokenizer, record, context: int, where: str, split: ChatSplit, name: str, counts: dict
    ) -> None:
        """Encode one record into `split` (the one called `name`), or count it dropped."""
        raise NotImplementedError

    def empty_split(self, path, name: str, counts: dict, context: int) -> str:
        """The error when a split has nothing in it."""
        raise NotImplementedError

    def written(self, splits: dict[str, ChatSplit], counts: dict, context: int) -> tuple[dict, dict, dict]:
        """(meta.json's "chat", other files by name, more meta) for the finished splits."""
        learned = {name: sum(split.mask) for name, split in splits.items()}
        return {"context": context, **counts, "learned_tokens": learned}, {}, {}


class Conversations(RecordKind):
    """`data prepare --chat`: a conversation (messages, optionally tools) a line, or a {"text"} line. A conversation
    longer than `context` + 1 tokens (one training window) is cut after its last reply that fits, or dropped
    when not even its first reply fits; a text is cut into windows, all learned."""

    unit, total = "line", "conversations"

    def read(self, path, line_limit):
        return list(read_conversations(path, text=True, line_limit=line_limit))

    def tokenizer(self, tokenizer, records):
        tools = any(
            record and "messages" in record and uses_tools(record["messages"], record.get("tools"))
            for _, record in records
        )
        return chat_tokenizer(tokenizer, tools)

    def counts(self):
        return {"conversations": 0, "texts": 0, "cut": 0, "dropped": 0}

    def add(self, tokenizer, record, context, where, split, name, counts):
        try:
            if "text" in record:
                ids = tokenizer.encode_ordinary(record["text"])  # text, whatever it spells
                for start in range(0, len(ids), context + 1):
                    window = ids[start : start + context + 1]
                    split.add(window, [1] * len(window))
                counts["texts"] += 1
                return
            ids, mask, ends = encode_conversation(tokenizer, record["messages"], record.get("tools"))
        except TokenizerError as exc:
            raise DataError(f"{where}: {exc}") from None
        if not ends:
            raise DataError(f"{where}: the conversation has no assistant message to learn")
        fitted = fit_to_context(ids, mask, ends, context + 1)
        counts["conversations"] += 1
        if fitted is None:
            counts["dropped"] += 1
            return
        counts["cut"] += len(fitted[0]) < len(ids)
        split.add(*fitted)

    def empty_split(self, path, name, counts, context):
        return (
            f"{path}: the {name} split has no conversation ({counts['conversations']} read, "
            f"{counts['dropped']} longer than the context of {context}); give more conversations"
        )


def prepare_tuning(
    kind: RecordKind,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    tokenizer: Tokenizer,
    context: int,
    val_fraction: float = 0.1,
    force: bool = False,
    progress: bool | None = None,
) -> dict:
    """Encode the records of `path` (of `kind`) through the model's tokenizer and chat template into a data
    directory for tuning; returns its meta.json. The validation split takes every record that brings the running
    count of `val_fraction * i` past a whole number, so it is spread through the file."""
    check_output(out_dir, val_fraction, force)
    records = kind.read(path, longest_line(chat_tokenizer(tokenizer), context))
    tokenizer = kind.tokenizer(tokenizer, records)
    splits = {"train": ChatSplit(), "val": ChatSplit()}
    counts = kind.counts()
    disable = None if progress is None else not progress
    for index, (number, record) in enumerate(tqdm(records, desc="encoding", unit=kind.unit, disable=disable)):
        if record is None:  # a line too long to fit the context, skipped unread
            counts["dropped"] += 1
            if kind.total:
                counts[kind.total] += 1
            continue
        name = split_of(index, val_fraction)
        kind.add(tokenizer, record, context, f"{path} line {number}", splits[name], name, counts)
    for name, split in splits.items():
        if not split.starts:
            raise DataError(kind.empty_split(path, name, counts, context))
    chat_meta, files, extra = kind.written(splits, counts, context)
    return write_chat_data(out_dir, force, tokenizer, splits, val_fraction, path, chat_meta, files, **extra)


def write_chat_data(
    out_dir: str | os.PathLike,
    force: bool,
    tokenizer: Tokenizer,
    splits: dict[str, ChatSplit],
    val_fraction: float,
    source: str | os.PathLike,
    chat_meta: dict,
    files: dict[str, str] | None = None,
    **extra_meta: object,
) -> dict:
    """Write the splits' tokens, masks and starts, the tokenizer, meta.json (with `chat_meta` under "chat",
    where the loader may start a window: `{split}_starts`) and any other `files` (name -> text) into a new data
    directory; returns the meta."""
    dtype = token_dtype(tokenizer.vocab_size)
    with written_directory(out_dir, DATA_DIR, force) as out:
        for name, split in splits.items():
            for suffix, values, kind in (
                ("", split.ids, dtype),
                (".mask", split.mask, MASK_DTYPE),
                (".starts", split.starts, STARTS_DTYPE),
            ):
                with open(out / f"{name}{suffix}.bin", "wb") as f:
                    write_array(f, np.asarray(values, dtype=kind))
        meta = {
            "tokenizer": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "train_tokens": len(splits["train"].ids),
            "val_tokens": len(splits["val"].ids),
            "val_fraction": val_fraction,
            "chat": {
                **chat_meta,
                "train_starts": len(splits["train"].starts),
                "val_starts": len(splits["val"].starts),
            },
            **extra_meta,
            "sources": [{"source": str(source), "sha256": sha256_file(Path(source))}],
        }
        for name, text in (files or {}).items():
            (out / name).write_text(text, encoding="utf-8")
        tokenizer.save(out / "tokenizer.json")
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
