"""BPE training and encoding speed: lucidlm's pure-Python tokenizer beside Hugging Face `tokenizers` (Rust).

Both learn a 4,096-token byte-level vocabulary from the Tiny Shakespeare training split with the same split
pattern, then encode the validation split. The ids of the two encoders are also compared.

    python benchmarks/bpe_speed.py
"""

from __future__ import annotations

import time

import tokenizers
from common import TINY_SHAKESPEARE, WORK, machine, write_results

from lucidlm.tokenizers import BPETokenizer
from lucidlm.tokenizers.bpe import SPLIT_PATTERNS


def hugging_face_train(text: str, vocab_size: int) -> tokenizers.Tokenizer:
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERNS["gpt4"]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main() -> None:
    text = TINY_SHAKESPEARE.read_text()
    train_text, val_text = text[: int(len(text) * 0.9)], text[int(len(text) * 0.9) :]
    ours, ours_train = timed(lambda: BPETokenizer.train(train_text, 4096, progress=False))
    theirs, theirs_train = timed(hugging_face_train, train_text, 4096)
    ours.chunk_cache.clear()
    our_ids, ours_encode = timed(ours.encode, val_text, "all")
    their_ids, theirs_encode = timed(lambda: theirs.encode(val_text).ids)
    ours.save(WORK / "bpe-4096.json")
    exported = tokenizers.Tokenizer.from_file(str(WORK / "bpe-4096.json"))
    results = {
        "machine": machine(),
        "train_chars": len(train_text),
        "val_chars": len(val_text),
        "vocab_size": 4096,
        "lucidlm_train_s": round(ours_train, 2),
        "hf_train_s": round(theirs_train, 2),
        "lucidlm_encode_chars_per_s": round(len(val_text) / ours_encode),
        "hf_encode_chars_per_s": round(len(val_text) / theirs_encode),
        "val_tokens": len(our_ids),
        "hf_val_tokens_own_training": len(their_ids),
        "exported_ids_equal": exported.encode(val_text).ids == our_ids,
    }
    our_rate, their_rate = results["lucidlm_encode_chars_per_s"], results["hf_encode_chars_per_s"]
    table = f"""## BPE tokenizer (`benchmarks/bpe_speed.py`)

Byte-level BPE, GPT-4 split pattern, 4,096 tokens learned from the Tiny Shakespeare training split
({len(train_text):,} characters), then the validation split ({len(val_text):,} characters) encoded from cold.

| | lucidlm (Python) | Hugging Face tokenizers (Rust) |
|---|---:|---:|
| train | {ours_train:.1f} s | {theirs_train:.1f} s |
| encode (cold cache, 1 process) | {our_rate:,} chars/s | {their_rate:,} chars/s |
| val tokens | {len(our_ids):,} | {len(their_ids):,} (its own merges) |

Our exported `tokenizer.json`, loaded by `tokenizers`, gives ids identical to ours on the whole val split:
**{results["exported_ids_equal"]}**."""
    write_results("bpe_speed", results, table)


if __name__ == "__main__":
    WORK.mkdir(parents=True, exist_ok=True)
    main()
