"""Bits per byte: the loss spread over the bytes of the text its tokens stand for, the same for every tokenizer."""

import json
import math

import numpy as np
import pytest
import torch

from lucidlm.data import Source, open_split, prepare
from lucidlm.evaluate import score, split_loss, text_bytes, tokens_per_byte
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer, load_tokenizer
from lucidlm.train import train

from .conftest import tiny_config

TEXT = "Où est la café? Ünïcödé bytes: ½ ∑ 🙂 and plain ASCII too.\n" * 6


@pytest.mark.parametrize("kind", [CharTokenizer, WordTokenizer, BPETokenizer], ids=lambda c: c.kind)
def test_the_scored_tokens_stand_for_the_texts_bytes_after_the_first_token(kind):
    tokenizer = kind.train([TEXT], 300) if kind is BPETokenizer else kind.train([TEXT])
    tokens = np.asarray(tokenizer.encode(TEXT))
    first = tokenizer.decode(tokens[:1].tolist()).encode("utf-8")
    assert text_bytes(tokenizer, tokens) == len(TEXT.encode("utf-8")) - len(first)
    assert tokens_per_byte(tokenizer, tokens) == (len(tokens) - 1) / (len(TEXT.encode("utf-8")) - len(first))


def test_score_gives_nats_per_token_times_tokens_over_bytes_over_ln2():
    tokenizer = CharTokenizer.train([TEXT])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    tokens = np.asarray(tokenizer.encode(TEXT))
    result = score(model, tokens, tokenizer)
    loss, count = split_loss(model, tokens)
    n_bytes = len(TEXT[1:].encode("utf-8"))  # one character a token: the bytes of every character but the first
    assert result["bytes"] == n_bytes and result["tokens"] == count == len(TEXT) - 1
    assert result["bits_per_byte"] == pytest.approx(loss * count / n_bytes / math.log(2), rel=1e-12)
    assert result["bits_per_byte"] < result["loss"] / math.log(2)  # several bytes a character: fewer bits a byte


def test_training_logs_validation_bits_per_byte(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT * 20, encoding="utf-8")
    prepare([Source(tmp_path / "t.txt", "t.txt")], tmp_path / "data", "char", progress=False)
    vocab = json.loads((tmp_path / "data" / "meta.json").read_text())["vocab_size"]
    train(tmp_path / "data", tmp_path / "run", tiny_config(vocab, max_steps=4, eval_interval=2), progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "val_loss" in r]
    val = np.asarray(open_split(tmp_path / "data", "val"))
    ratio = tokens_per_byte(load_tokenizer(tmp_path / "data" / "tokenizer.json"), val)
    assert 0.3 < ratio < 1  # one character a token, and more than one byte to many of them
    assert len(evaluated) == 2
    for record in evaluated:
        assert record["val_bpb"] == pytest.approx(record["val_loss"] * ratio / math.log(2), rel=1e-12)
