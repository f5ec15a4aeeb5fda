import itertools
from collections import Counter
from pathlib import Path

import pytest
import regex
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lucidlm.data import Source, prepare
from lucidlm.errors import ConfigError, TokenizerError
from lucidlm.tokenizers import BPETokenizer, load_tokenizer
from lucidlm.tokenizers.bpe import SPLIT_PATTERNS, merge_pair

TINY_SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"
GENERATED = "".join(
    f"{name}:\nWhat say'st thou, {name.lower()}? I'll give {n} ducats, 'tis {n * 7} in all!\n\n"
    for n, name in enumerate(["ROMEO", "JULIET", "Nurse", "MERCUTIO", "Tybalt", "Friar"] * 60)
)


def corpus() -> tuple[str, str]:
    """(train, val): Tiny Shakespeare split 90/10 when it is there, else a generated text."""
    text = TINY_SHAKESPEARE.read_text() if TINY_SHAKESPEARE.exists() else GENERATED * 8
    split = int(len(text) * 0.9)
    return text[:split], text[split:]


@pytest.fixture(scope="module")
def trained() -> dict[str, BPETokenizer]:
    train_text = corpus()[0][:300_000]
    return {p: BPETokenizer.train(train_text, 1024, pattern=p, progress=False) for p in SPLIT_PATTERNS}


def test_the_wikipedia_example_by_hand():
    # aaabdaaabac: "aa" is most frequent (4) -> 256. Then "ab" and (256, "a") tie at 2; the smaller pair
    # (97, 98) wins -> 257 "ab". Then (256, 257) "aaab" (2) -> 258. The text becomes X d X a c.
    tokenizer = BPETokenizer.train("aaabdaaabac", vocab_size=256 + 3 + 1, progress=False)
    assert tokenizer.merges == [(97, 97), (97, 98), (256, 257)]
    assert tokenizer.token_bytes[256:] == [b"aa", b"ab", b"aaab"]
    assert tokenizer.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tokenizer.special_tokens == {"<|endoftext|>": 259}
    assert tokenizer.vocab_size == 260


def reference_train(text: str, n_merges: int, pattern: str) -> list[tuple[int, int]]:
    """The plain algorithm: recount every pair of every chunk before each merge."""
    words = Counter(regex.findall(SPLIT_PATTERNS[pattern], text))
    sequences = {w: list(w.encode()) for w in words}
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts: Counter = Counter()
        for word, ids in sequences.items():
            for pair in itertools.pairwise(ids):
                counts[pair] += words[word]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        sequences = {w: merge_pair(ids, best, new_id) for w, ids in sequences.items()}
    return merges


@pytest.mark.parametrize("pattern", SPLIT_PATTERNS)
def test_incremental_training_equals_recounting(pattern):
    text = corpus()[0][:20_000]
    ours = BPETokenizer.train(text, 256 + 150 + 1, pattern=pattern, progress=False)
    assert ours.merges == reference_train(text, 150, pattern)


def test_training_is_deterministic_and_streams():
    text = corpus()[0][:50_000]
    once = BPETokenizer.train(text, 400, progress=False)
    assert BPETokenizer.train(text, 400, progress=False).merges == once.merges
    pieces = [text[i : i + 1000] for i in range(0, len(text), 1000)]
    cut_pieces, carry = [], ""
    for piece in pieces:
        piece = carry + piece
        cut = BPETokenizer.safe_cut(piece)
        cut_pieces.append(piece[:cut])
        carry = piece[cut:]
    cut_pieces.append(carry)
    assert BPETokenizer.train(iter(cut_pieces), 400, progress=False).merges == once.merges


def test_vocab_size_too_small():
    with pytest.raises(ConfigError, match="smaller than the 256 byte tokens plus 1 special"):
        BPETokenizer.train("hello", 256)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_round_trip_any_text(trained, text):
    tokenizer = trained["gpt4"]
    assert tokenizer.decode(tokenizer.encode(text, allowed_special="none")) == text


def test_special_tokens_follow_the_policy(trained):
    tokenizer = trained["gpt4"]
    eot = tokenizer.special_tokens["<|endoftext|>"]
    text = "Good night.<|endoftext|>ROMEO:"
    with pytest.raises(TokenizerError, match="contains the special token '<\\|endoftext\\|>'"):
        tokenizer.encode(text)
    assert eot in tokenizer.encode(text, allowed_special="all")
    assert tokenizer.encode(text, allowed_special={"<|endoftext|>"}) == tokenizer.encode(text, allowed_special="all")
    plain = tokenizer.encode(text, allowed_special="none")
    assert eot not in plain and tokenizer.decode(plain) == text
    assert tokenizer.decode(tokenizer.encode(text, allowed_special="all")) == text
    with pytest.raises(TokenizerError, match="unknown special token"):
        tokenizer.encode(text, allowed_special={"<|im_start|>"})
    # merges never produce a special token, even from text made of its characters
    assert BPETokenizer.train("<|endoftext|>" * 50, 300, progress=False).encode("<|endoftext|>", "none") != [299]


def test_lone_surrogates_and_partial_characters(trained):
    tokenizer = trained["gpt4"]
    with pytest.raises(TokenizerError, match="lone surrogate '\\\\ud800' at index 2"):
        tokenizer.encode("ab\ud800cd")
    ids = tokenizer.encode("é😀", allowed_special="none")
    assert tokenizer.decode(ids) == "é😀"
    byte_ids = [tokenizer.byte_ids[b] for b in "😀".encode()]
    assert tokenizer.decode(byte_ids[:2]) == "\ufffd"
    assert tokenizer.unknown_symbols("ok\udfff") == ["\udfff"]


@given(st.text(), st.text())
def test_safe_cut_never_changes_the_encoding(left, right):
    text = left + right
    for pattern in SPLIT_PATTERNS:
        split = regex.compile(SPLIT_PATTERNS[pattern])
        cut = BPETokenizer.safe_cut(text)
        assert split.findall(text[:cut]) + split.findall(text[cut:]) == split.findall(text)


@pytest.mark.parametrize("pattern", SPLIT_PATTERNS)
def test_hugging_face_tokenizers_loads_our_file_and_gives_the_same_ids(tmp_path, trained, pattern):
    ours = trained[pattern]
    ours.save(tmp_path / "tokenizer.json")
    theirs = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    val = corpus()[1]
    assert theirs.encode(val).ids == ours.encode(val, allowed_special="all")
    mixed = "Hello  world!\n\n\tdon't 12345 <|endoftext|>e\u0301 😀 中文\r\n"
    assert theirs.encode(mixed).ids == ours.encode(mixed, allowed_special="all")
    assert theirs.decode(ours.encode(mixed, allowed_special="none")) == mixed
    reloaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert reloaded.merges == ours.merges and reloaded.pattern == pattern
    assert reloaded.encode(val, allowed_special="all") == ours.encode(val, allowed_special="all")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(), st.just("<|endoftext|>")), max_size=6).map("".join))
def test_parity_with_hugging_face_on_generated_text(tmp_path_factory, trained, text):
    path = tmp_path_factory.getbasetemp() / "parity.json"
    if not path.exists():
        trained["gpt4"].save(path)
    theirs = tokenizers.Tokenizer.from_file(str(path))
    assert theirs.encode(text).ids == trained["gpt4"].encode(text, allowed_special="all")


def test_prepare_with_bpe_trains_on_the_training_split(tmp_path):
    text = GENERATED
    (tmp_path / "t.txt").write_text(text)
    meta = prepare([Source(tmp_path / "t.txt", "t")], tmp_path / "out", "bpe", vocab_size=300, progress=False)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 300 and meta["tokenizer"] == "bpe"
    tokenizer = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    assert tokenizer.merges == BPETokenizer.train(text[: int(len(text) * 0.9)], 300, progress=False).merges
    assert meta["train_tokens"] == len(tokenizer.encode(text[: int(len(text) * 0.9)]))
