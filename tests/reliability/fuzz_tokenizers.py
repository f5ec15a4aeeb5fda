"""Coverage-guided fuzzing of the tokenizers with atheris (libFuzzer for Python), for `make soak`.

    python tests/reliability/fuzz_tokenizers.py -atheris_runs=200000

Each input is one of three cases, chosen by its first byte:
    0  the rest of the bytes as a tokenizer.json file: it loads (and then encodes and decodes) or raises a
       LucidError; any other exception is a bug
    1  the rest as text for a byte-level BPE tokenizer: decode(encode(text)) == text, with special-token
       strings in the text as text or as special tokens; by default they are a TokenizerError
    2  the rest as token ids streamed through StopStreamer with a stop string: the pieces it hands out are
       the decoded text up to the stop string
An exception other than those is reported by atheris with the input that caused it (saved as crash-*).
"""

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["lucidlm"]):
    from lucidlm.decode import StopStreamer
    from lucidlm.errors import LucidError, TokenizerError
    from lucidlm.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer

BPE = BPETokenizer.train(["hello world, hello there; the theme of the thing"] * 3, vocab_size=280)
CHAR = CharTokenizer.train(["hello world"])
FILE = Path(tempfile.mkdtemp(prefix="lucidlm-fuzz-")) / "tokenizer.json"


def load_file(data: bytes) -> None:
    FILE.write_bytes(data)
    try:
        tokenizer = load_tokenizer(FILE)
        tokenizer.decode(tokenizer.encode("hello"))
    except LucidError:
        pass


def round_trip(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    for allowed_special in ("none", "all"):
        assert BPE.decode(BPE.encode(text, allowed_special)) == text, (repr(text), allowed_special)
    try:
        BPE.encode(text)
    except TokenizerError:
        assert "<|endoftext|>" in text, repr(text)


def stream(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    stop = provider.ConsumeUnicodeNoSurrogates(3)
    ids = [provider.ConsumeIntInRange(0, BPE.vocab_size - 1) for _ in range(provider.remaining_bytes() // 2)]
    streamer = StopStreamer(BPE, [stop])
    shown = ""
    for token in ids:
        shown += streamer.push(token)
        if streamer.stopped:
            break
    shown += streamer.finish()
    whole = BPE.decode(ids)
    expected = whole[: whole.find(stop)] if stop and stop in whole else whole
    # a stop string made only of U+FFFD may be met inside an unfinished character, which is never shown
    assert shown == expected or "\ufffd" in stop, (ids, stop, shown, expected)


CASES = [load_file, round_trip, stream]


def one_input(data: bytes) -> None:
    if data:
        CASES[data[0] % len(CASES)](data[1:])


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
