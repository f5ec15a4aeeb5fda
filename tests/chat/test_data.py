"""Chat data: the loss mask marks the assistant's turns (and their end of turn) and nothing else; bad lines are
errors that name the line; long conversations are cut at a turn or dropped, with counts."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lucidlm.chat.data import Conversations, encode_conversation, prepare_tuning
from lucidlm.data.loader import BatchLoader
from lucidlm.errors import DataError
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import CharTokenizer, load_tokenizer
from tests.chat.conftest import conversation, write_jsonl

TWO_TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Yo"},
    {"role": "user", "content": "2 plus 2?"},
    {"role": "assistant", "content": "4"},
]


def test_the_mask_covers_each_reply_and_its_end_of_turn(chat_tokenizer):
    ids, mask, ends = encode_conversation(chat_tokenizer, TWO_TURNS)
    text = (
        "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Yo<|end|><|user|>2 plus 2?<|end|><|assistant|>4<|end|>"
    )
    assert ids == chat_tokenizer.encode_with_specials(text)
    learned = chat_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert learned == "Yo<|end|>4<|end|>"
    end = chat_tokenizer.special_tokens["<|end|>"]
    assert ids[ends[0] - 1] == end and ends[1] == len(ids)
    # the role token that opens a reply is read, not learned: the prompt ends with it
    assert [m for i, m in zip(ids, mask, strict=True) if i == chat_tokenizer.special_tokens["<|assistant|>"]] == [0, 0]


def test_the_loss_is_the_mean_over_the_assistants_tokens_only(tmp_path, chat_tokenizer):
    write_jsonl(tmp_path / "c.jsonl", [{"messages": TWO_TURNS}] * 4)
    prepare_tuning(Conversations(), tmp_path / "c.jsonl", tmp_path / "data", chat_tokenizer, 64, 0.5, progress=False)
    loader = BatchLoader(tmp_path / "data", block_size=64, batch_size=2, seed=0)
    x, y = loader.batch("train", 0)
    ids, mask, _ = encode_conversation(chat_tokenizer, TWO_TURNS)
    # each window starts at a conversation; its targets outside the replies (and past the split's end) are -1
    n = len(ids)
    assert x[0, :n].tolist() == ids
    expected = [t if m else -1 for t, m in zip(ids[1:], mask[1:], strict=True)]
    assert y[0, : n - 1].tolist() == expected
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=chat_tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    logits, loss = model(x, y)
    by_hand = []
    for row in range(2):
        for position in range(64):
            if y[row, position] >= 0:
                by_hand.append(F.cross_entropy(logits[row, position][None], y[row, position][None]))
    assert len(by_hand) >= 5  # at least one conversation's replies in each row
    assert float(loss.detach()) == pytest.approx(float(torch.stack(by_hand).mean().detach()), abs=1e-6)


def test_prepared_chat_data_records_counts_and_the_extended_tokenizer(tmp_path, chat_tokenizer):
    plain = CharTokenizer(chat_tokenizer.chars)  # a base model's tokenizer: prepare_chat adds the turn tokens
    records = [conversation(f"q{i}", f"a{i}") for i in range(9)] + [{"text": "plain text " * 10}]
    long = {
        "messages": [
            *conversation("hi", "yo")["messages"],
            {"role": "user", "content": "x" * 80},
            {"role": "assistant", "content": "no"},
        ]
    }
    too_long = conversation("y" * 80, "no")
    write_jsonl(tmp_path / "c.jsonl", [*records, long, too_long])
    meta = prepare_tuning(Conversations(), tmp_path / "c.jsonl", tmp_path / "data", plain, context=40, progress=False)
    assert meta["chat"]["conversations"] == 11 and meta["chat"]["texts"] == 1
    assert meta["chat"]["cut"] == 1 and meta["chat"]["dropped"] == 1
    saved = load_tokenizer(tmp_path / "data" / "tokenizer.json")
    assert saved.to_dict() == chat_tokenizer.to_dict() and saved.extends(plain)
    for split in ("train", "val"):
        tokens = np.fromfile(tmp_path / "data" / f"{split}.bin", dtype="<u2")
        mask = np.fromfile(tmp_path / "data" / f"{split}.mask.bin", dtype="u1")
        starts = np.fromfile(tmp_path / "data" / f"{split}.starts.bin", dtype="<u8")
        assert len(tokens) == len(mask) == meta[f"{split}_tokens"] and starts[0] == 0
        assert int(mask.sum()) == meta["chat"]["learned_tokens"][split]
    # the text's 110 characters are 3 windows (of context + 1 = 41 tokens), every token learned
    assert meta["chat"]["train_starts"] + meta["chat"]["val_starts"] == 10 + 3


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "line 2: not valid JSON"),
        (json.dumps({"messages": []}), 'line 2: expected {"messages"'),
        (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "line 2: message 1 has role 'robot'"),
        (json.dumps({"messages": [{"role": "user", "content": 3}]}), "line 2: message 1 has no text content"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "extra": 1}), "line 2: unknown key(s) 'extra'"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "line 2: the conversation has no assistant"),
        (json.dumps({"text": 5}), 'line 2: a text line is {"text": "..."}'),
    ],
)
def test_a_bad_line_is_an_error_that_names_it_and_writes_nothing(tmp_path, chat_tokenizer, line, problem):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(conversation("q", "a")) + "\n" + line + "\n")
    with pytest.raises(DataError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        prepare_tuning(Conversations(), path, tmp_path / "data", chat_tokenizer, context=64, progress=False)
    assert not (tmp_path / "data").exists()


def test_the_numpy_backend_refuses_chat_data(tmp_path, chat_tokenizer):
    from tests.conftest import run_lucidlm

    write_jsonl(tmp_path / "c.jsonl", [{"messages": TWO_TURNS}] * 4)
    prepare_tuning(Conversations(), tmp_path / "c.jsonl", tmp_path / "data", chat_tokenizer, 64, 0.5, progress=False)
    result = run_lucidlm("train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--backend", "numpy",
                         "--preset", "nanogpt-baby", "--max-steps", "1")  # fmt: skip
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert "the NumPy backend has no loss mask for chat data; train it with --backend torch" in result.stderr


def test_a_line_too_long_to_fit_the_context_is_skipped_as_it_is_read(tmp_path, chat_tokenizer):
    """A 30 MB conversation cannot fit 64 tokens: it is counted as dropped, and never held in memory (issue 47)."""
    import tracemalloc

    from lucidlm.chat.data import longest_line, read_conversations

    huge = conversation("x" * 30_000_000, "a")
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(huge) + "\n" + "".join(json.dumps(conversation(f"q{i}", "a")) + "\n" for i in range(20)))
    limit = longest_line(chat_tokenizer, 64)
    assert limit == 12 * len("<|assistant|>") * 65 + 64 * 1024  # the longest token is a turn token's text
    tracemalloc.start()
    records = list(read_conversations(path, line_limit=limit))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert records[0] == (1, None) and [n for n, _ in records[1:]] == list(range(2, 22))
    assert peak < 4_000_000, peak  # the 30 MB line went through a MiB at a time
    meta = prepare_tuning(Conversations(), path, tmp_path / "data", chat_tokenizer, context=64, progress=False)
    assert meta["chat"]["conversations"] == 21 and meta["chat"]["dropped"] == 1
