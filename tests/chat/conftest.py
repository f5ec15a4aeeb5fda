import json

import pytest

from lucidlm.tokenizers import CharTokenizer
from lucidlm.tokenizers.base import CHAT_TOKENS

ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:.,!?\n"


@pytest.fixture
def chat_tokenizer() -> CharTokenizer:
    return CharTokenizer.train([ALPHABET]).with_special_tokens(CHAT_TOKENS)


def write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def conversation(question: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
