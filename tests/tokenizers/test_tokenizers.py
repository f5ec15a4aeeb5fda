import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lucidlm.errors import ConfigError, TokenizerError
from lucidlm.tokenizers import CharTokenizer, WordTokenizer, load_tokenizer


def test_char_vocabulary_is_the_sorted_characters():
    tokenizer = CharTokenizer.train(["hello", " world"])
    assert tokenizer.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tokenizer.encode("hello") == [3, 2, 4, 4, 5]
    assert tokenizer.decode([7, 5, 6, 4, 1]) == "world"


@settings(max_examples=300)
@given(st.text(min_size=1))
def test_char_round_trip(text):
    tokenizer = CharTokenizer.train([text])
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.vocab_size == len(set(text))


def test_char_unknown_characters_are_an_error_that_lists_them():
    tokenizer = CharTokenizer.train(["abc"])
    assert tokenizer.unknown_symbols("abxyx") == ["x", "y"]
    with pytest.raises(TokenizerError, match="'x' 'y'"):
        tokenizer.encode("abxyx")


def test_char_rejects_vocab_size():
    with pytest.raises(ConfigError, match="does not apply to the char tokenizer"):
        CharTokenizer.train(["abc"], vocab_size=10)


def test_word_tokens_are_words_punctuation_and_whitespace_runs():
    assert WordTokenizer.split("Hello, world!\n\n  Yes.") == ["Hello", ",", " ", "world", "!", "\n\n  ", "Yes", "."]


def test_word_vocabulary_by_frequency_then_alphabet():
    tokenizer = WordTokenizer.train(["b a b c a b"])
    # counts: ' ' 5, b 3, a 2, c 1
    assert tokenizer.vocab == ["<unk>", " ", "b", "a", "c"]
    capped = WordTokenizer.train(["b a b c a b"], vocab_size=3)
    assert capped.vocab == ["<unk>", " ", "b"]
    assert capped.encode("b a") == [2, 1, 0]
    assert capped.unknown_symbols("b a c a") == ["a", "c"]


@settings(max_examples=300)
@given(st.text(min_size=1))
def test_word_round_trip(text):
    tokenizer = WordTokenizer.train([text])
    assert tokenizer.decode(tokenizer.encode(text)) == text


@given(st.text(), st.text())
def test_word_safe_cut_never_splits_a_token(left, right):
    text = left + right
    cut = WordTokenizer(["<unk>"]).safe_cut(text)
    assert WordTokenizer.split(text[:cut]) + WordTokenizer.split(text[cut:]) == WordTokenizer.split(text)


@pytest.mark.parametrize("tokenizer", [CharTokenizer.train(["some text\n"]), WordTokenizer.train(["some text\n"])])
def test_save_load_round_trip(tmp_path, tokenizer):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tokenizer)
    assert loaded.to_dict() == tokenizer.to_dict()
    assert loaded.encode("some text") == tokenizer.encode("some text")
    assert json.loads(path.read_text())["type"] == tokenizer.kind
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"type": "klingon"}', "unknown tokenizer type 'klingon'"),
        ('{"type": ["char"]}', "unknown tokenizer type None"),  # found by atheris (a TypeError before)
        ('{"type": "char"}', "malformed char tokenizer"),
        ('{"type": "char", "vocab": ["ab"]}', "malformed"),
    ],
)
def test_load_errors(tmp_path, content, message):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(path)


def test_load_missing(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer at"):
        load_tokenizer(tmp_path / "nope.json")
