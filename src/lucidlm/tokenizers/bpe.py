"""Byte-level byte-pair encoding (BPE), as GPT-2 and GPT-4 use it, written to be read.

Text is UTF-8 bytes, so any string can be encoded and nothing is ever unknown. Training starts from the 256 byte
values and repeatedly merges the most frequent adjacent pair of tokens into a new token until the vocabulary
is full. Encoding replays those merges, lowest rank (earliest learned) first.

Before any of that, a regular expression splits the text into chunks (words with their leading space, runs of
digits, punctuation, whitespace), and merges never cross a chunk boundary: " dog" and "dog." share "dog".

Training counts the pairs once, then updates the counts only for the chunks that contain the merged pair, and
keeps the candidates in a priority queue. Ties between equally frequent pairs go to the smaller pair of ids
(the left id first), so training the same text twice gives the same merges.

`save` writes the Hugging Face `tokenizers` format (tokenizer.json), so
`tokenizers.Tokenizer.from_file(path)` loads it and gives the same ids.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from typing import Any

import regex
from tqdm import tqdm

from lucidlm.errors import ConfigError, TokenizerError
from lucidlm.tokenizers.base import Tokenizer, added_tokens_json, numbered_special_tokens

# GPT-2's split (2019) and GPT-4's (cl100k_base, 2023): the latter keeps digits in groups of at most three and
# attaches a trailing newline to punctuation.
SPLIT_PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]"""
    r"""|\s+(?!\S)|\s+""",
}
DEFAULT_SPECIAL_TOKENS = ("<|endoftext|>",)
DEFAULT_VOCAB_SIZE = 4096


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair`, left to right, by `new_id`."""
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, which the Hugging Face byte-level format stores tokens in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(
        self,
        token_bytes: list[bytes],
        merges: list[tuple[int, int]],
        pattern: str = "gpt4",
        special_tokens: dict[str, int] | None = None,
    ):
        """`token_bytes[id]` is each ordinary token's bytes; `merges` lists the learned pairs in rank order, each
        making the token whose bytes are the pair's bytes joined."""
        if pattern not in SPLIT_PATTERNS:
            raise ConfigError(f"unknown split pattern {pattern!r}; choose one of: {', '.join(SPLIT_PATTERNS)}")
        self.pattern = pattern
        self.split_regex = regex.compile(SPLIT_PATTERNS[pattern])
        self.token_bytes = list(token_bytes)
        self.bytes_to_id = {b: i for i, b in enumerate(self.token_bytes)}
        self.byte_ids = [self.bytes_to_id[bytes([b])] for b in range(256)]
        self.merges = list(merges)
        self.ranks = {
            pair: (rank, self.bytes_to_id[self.token_bytes[pair[0]] + self.token_bytes[pair[1]]])
            for rank, pair in enumerate(self.merges)
        }
        self.special_tokens = dict(special_tokens or {})
        for text, index in self.special_tokens.items():
            if index != len(self.token_bytes) + list(self.special_tokens).index(text):
                raise ValueError("special tokens take the ids after the ordinary tokens, in order")
        self.special_regex = None
        if self.special_tokens:
            alternatives = "|".join(regex.escape(s) for s in sorted(self.special_tokens, key=len, reverse=True))
            self.special_regex = regex.compile(f"({alternatives})")
        self.chunk_cache: dict[str, list[int]] = {}

    # --- training -----------------------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        chunks: Iterable[str] | str,
        vocab_size: int | None = None,
        pattern: str = "gpt4",
        special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
        progress: bool | None = None,
    ) -> BPETokenizer:
        vocab_size = DEFAULT_VOCAB_SIZE if vocab_size is None else vocab_size
        special_tokens = list(special_tokens)
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ConfigError(
                f"--vocab-size {vocab_size} is smaller than the 256 byte tokens plus "
                f"{len(special_tokens)} special token(s); use at least {256 + len(special_tokens)}"
            )
        if isinstance(chunks, str):
            chunks = [chunks]
        split_regex = regex.compile(SPLIT_PATTERNS[pattern])
        special_regex = regex.compile("|".join(map(regex.escape, special_tokens))) if special_tokens else None

        # Count each distinct chunk once; a chunk's pairs then count as often as the chunk occurs.
        chunk_counts: Counter[str] = Counter()
        for text in chunks:
            for part in special_regex.split(text) if special_regex else [text]:
                chunk_counts.update(split_regex.findall(part))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        frequency = list(chunk_counts.values())

        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> the words that contain it
        for index, word in enumerate(words):
            for pair in itertools.pairwise(word):
                pair_counts[pair] += frequency[index]
                where[pair].add(index)
        # A max-heap by count (heapq is a min-heap, hence the minus); ties go to the smaller pair.
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        token_bytes = [bytes([b]) for b in range(256)]
        merges: list[tuple[int, int]] = []
        with tqdm(
            total=n_merges, desc="learning merges", unit="merge", disable=None if progress is None else not progress
        ) as bar:
            while len(merges) < n_merges and heap:
                negative_count, pair = heapq.heappop(heap)
                if pair_counts.get(pair, 0) != -negative_count:
                    continue  # a stale entry: this pair's count changed after it was pushed
                new_id = len(token_bytes)
                merges.append(pair)
                token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
                changed = set()
                for index in where.pop(pair):
                    word = words[index]
                    merged = merge_pair(word, pair, new_id)
                    if len(merged) == len(word):
                        continue
                    for old in itertools.pairwise(word):
                        pair_counts[old] -= frequency[index]
                        changed.add(old)
                    for new in itertools.pairwise(merged):
                        pair_counts[new] += frequency[index]
                        where[new].add(index)
                        changed.add(new)
                    words[index] = merged
                for changed_pair in changed:
                    count = pair_counts[changed_pair]
                    if count > 0:
                        heapq.heappush(heap, (-count, changed_pair))
                    else:
                        del pair_counts[changed_pair]
                        where.pop(changed_pair, None)
                bar.update(1)
        specials = {text: len(token_bytes) + i for i, text in enumerate(special_tokens)}
        return cls(token_bytes, merges, pattern, specials)

    # --- encoding -----------------------------------------------------------------------------------------
    def encode_chunk(self, chunk: str) -> list[int]:
        """One pre-tokenized chunk: apply the merges, lowest rank first, until none applies."""
        cached = self.chunk_cache.get(chunk)
        if cached is not None:
            return cached
        ids = [self.byte_ids[b] for b in chunk.encode("utf-8")]
        while len(ids) >= 2:
            pair = min(itertools.pairwise(ids), key=lambda p: self.ranks.get(p, (float("inf"),))[0])
            if pair not in self.ranks:
                break
            ids = merge_pair(ids, pair, self.ranks[pair][1])
        if len(self.chunk_cache) < 200_000:
            self.chunk_cache[chunk] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode treating special-token strings as plain text."""
        ids: list[int] = []
        for chunk in self.split_regex.findall(text):
            ids.extend(self.encode_chunk(chunk))
        return ids

    def encode(self, text: str, allowed_special: str | set[str] = "none_raise") -> list[int]:
        """Token ids for `text`. Special-token strings in the text follow `allowed_special`, as in tiktoken:
        "all" (they become their special ids), "none" (encoded as plain text), "none_raise" (an error, the
        default: text from outside should not be able to inject an end-of-text), or a set of those allowed."""
        self.check_encodable(text)
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif allowed_special in ("none", "none_raise"):
            allowed = set()
        else:
            allowed = set(allowed_special)
            unknown = allowed - set(self.special_tokens)
            if unknown:
                raise TokenizerError(
                    f"unknown special token(s) {sorted(unknown)}; this tokenizer has {sorted(self.special_tokens)}"
                )
        if self.special_regex is None or allowed_special == "none":
            return self.encode_ordinary(text)
        ids: list[int] = []
        for part in self.special_regex.split(text):
            if part in self.special_tokens:
                if part not in allowed:
                    raise TokenizerError(
                        f"the text contains the special token {part!r}; pass "
                        "allowed_special='all' to encode it as one, or 'none' to encode it as text"
                    )
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def encode_stream(self, pieces: Iterable[str], processes: int = 1) -> Iterator[list[int]]:
        """Encode many pieces in order (special tokens allowed), in `processes` worker processes when > 1."""
        if processes <= 1:
            yield from (self.encode(piece, allowed_special="all") for piece in pieces)
            return
        with ProcessPoolExecutor(processes, initializer=_start_worker, initargs=(self.to_dict(),)) as pool:
            batch: list[str] = []
            for piece in pieces:  # a few pieces at a time, so a large input is never held whole
                batch.append(piece)
                if len(batch) == 2 * processes:
                    yield from pool.map(_encode_in_worker, batch)
                    batch = []
            yield from pool.map(_encode_in_worker, batch)

    @staticmethod
    def check_encodable(text: str) -> None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TokenizerError(
                f"the text has a lone surrogate {text[exc.start]!r} at index {exc.start}, which "
                "UTF-8 cannot encode; remove it or decode the source with errors='replace'"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Bytes joined and read as UTF-8; ids that end mid-character give U+FFFD, not an error."""
        special_text = {index: text.encode("utf-8") for text, index in self.special_tokens.items()}
        data = b"".join(self.token_bytes[i] if i < len(self.token_bytes) else special_text[i] for i in ids)
        return data.decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes) + len(self.special_tokens)

    def unknown_symbols(self, text: str) -> list[str]:
        """Byte-level: every character is encodable, except lone surrogates."""
        return [c for c in dict.fromkeys(text) if 0xD800 <= ord(c) <= 0xDFFF]

    @classmethod
    def safe_cut(cls, text: str) -> int:
        # After a newline that has non-space on both sides, neither split pattern joins across the cut.
        last = regex.search(r"(?r)(?<=\S\n)(?=\S)", text)  # (?r): search from the end
        return last.start() if last else 0

    # --- the Hugging Face tokenizer.json format -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        as_text = bytes_to_unicode()

        def printable(token: bytes) -> str:
            return "".join(as_text[b] for b in token)

        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added_tokens_json(self.special_tokens),
            "normalizer": None,
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": SPLIT_PATTERNS[self.pattern]},
                        "behavior": "Isolated",
                        "invert": False,
                    },
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
                ],
            },
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": {printable(token): index for index, token in enumerate(self.token_bytes)},
                "merges": [[printable(self.token_bytes[a]), printable(self.token_bytes[b])] for a, b in self.merges],
            },
        }

    @property
    def eos_ids(self) -> list[int]:
        own = [self.special_tokens[t] for t in DEFAULT_SPECIAL_TOKENS if t in self.special_tokens]
        return own + super().eos_ids

    def with_special_tokens(self, texts: Iterable[str]) -> BPETokenizer:
        texts = [*self.special_tokens, *texts]
        return BPETokenizer(
            self.token_bytes, self.merges, self.pattern, numbered_special_tokens(len(self.token_bytes), texts)
        )

    def encode_with_specials(self, text: str) -> list[int]:
        return self.encode(text, allowed_special="all")

    @staticmethod
    def is_own_format(data: dict[str, Any]) -> bool:
        """Whether a tokenizer.json is one this class wrote: byte-level BPE split by one of SPLIT_PATTERNS.
        (A Hub model's file is read by Hugging Face `tokenizers` instead: tokenizers/hf.py.)"""
        pre = data.get("pre_tokenizer")
        steps = pre.get("pretokenizers") if isinstance(pre, dict) else None
        if not isinstance(steps, list) or len(steps) != 2 or not all(isinstance(s, dict) for s in steps):
            return False
        split, byte_level = steps
        pattern = split.get("pattern")
        return (
            data.get("model", {}).get("type") == "BPE"
            and split.get("type") == "Split"
            and isinstance(pattern, dict)
            and pattern.get("Regex") in SPLIT_PATTERNS.values()
            and byte_level.get("type") == "ByteLevel"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPETokenizer:
        from_text = {c: b for b, c in bytes_to_unicode().items()}
        model = data["model"]
        vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
        if [index for _, index in vocab] != list(range(len(vocab))):
            raise ValueError("the vocabulary's ids are not 0..n-1")
        token_bytes = [bytes(from_text[c] for c in token) for token, _ in vocab]
        ids = model["vocab"]
        merges = [tuple(ids[part] for part in (m.split(" ") if isinstance(m, str) else m)) for m in model["merges"]]
        specials = {t["content"]: t["id"] for t in sorted(data.get("added_tokens", []), key=lambda t: t["id"])}
        split = data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
        patterns = {regex_text: name for name, regex_text in SPLIT_PATTERNS.items()}
        if split not in patterns:
            raise ValueError("its split pattern is neither GPT-2's nor GPT-4's")
        return cls(token_bytes, merges, patterns[split], specials)


_worker: BPETokenizer | None = None


def _start_worker(data: dict[str, Any]) -> None:
    global _worker
    _worker = BPETokenizer.from_dict(data)


def _encode_in_worker(piece: str) -> list[int]:
    return _worker.encode(piece, allowed_special="all")


def default_processes() -> int:
    return max(1, min(8, os.cpu_count() or 1))
