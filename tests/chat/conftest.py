import json

import pytest
import torch

from lucidlm.chat.template import CHAT_TOKENS
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import CharTokenizer

ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:.,!?\n"


@pytest.fixture
def chat_tokenizer() -> CharTokenizer:
    return CharTokenizer.train([ALPHABET]).with_special_tokens(CHAT_TOKENS)


def write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def conversation(question: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def one_token_model(tokenizer, token: int, block_size: int = 64) -> GPT:
    """A model whose every next token is `token` (its final norm outputs a constant that only that row reads)."""
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16,
                          bias=True, tie_embeddings=False))  # fmt: skip
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[token] = 1.0
    return model.eval()


@pytest.fixture
def base_run(tmp_path, chat_tokenizer):
    """A chat model's run directory (lucidlm's template), untrained, to tune further."""
    from tests.chat.test_repl import write_run

    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=chat_tokenizer.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32))
    write_run(tmp_path / "base", chat_tokenizer, model)
    return tmp_path / "base"


def assert_same_weights(run_a, run_b) -> None:
    """The latest checkpoints of two runs hold the same weights, bit for bit (a resume was exact)."""
    from lucidlm.load import load_model

    a, b = (load_model(run, "latest")[0].state_dict() for run in (run_a, run_b))
    for name in a:
        assert torch.equal(a[name], b[name]), name
