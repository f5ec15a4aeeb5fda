# %% [markdown]
# # Lesson 20: byte-pair encoding (BPE)
#
# Characters make long sequences; whole words make a huge vocabulary that still misses new words. BPE sits in
# between. Start from the 256 byte values (so any text can be encoded), then repeat: find the most frequent
# pair of adjacent tokens, and make it a new token. After $k$ merges the vocabulary has $256 + k$ tokens and
# common words have become single tokens. GPT-2, GPT-4 and Llama 3 all tokenize this way.
#
# Text is first split into chunks (words with their leading space, numbers, punctuation) and merges never cross
# a chunk, so " the" can become a token but "e t" cannot.

# %%
import itertools

from lucidlm.tokenizers import BPETokenizer

text = "the cat sat on the mat. the cat ate the rat. " * 20
tokenizer = BPETokenizer.train(text, vocab_size=256 + 12 + 1, progress=False)
for rank, (left, right) in enumerate(tokenizer.merges):
    new = 256 + rank
    print(
        f"merge {rank + 1:2}: {tokenizer.token_bytes[left]!r:10} + {tokenizer.token_bytes[right]!r:8} "
        f"-> token {new} {tokenizer.token_bytes[new]!r}"
    )

# The first merge is the most frequent pair of bytes. Count it by hand to check.
pairs = {}
for chunk in tokenizer.split_regex.findall(text):
    data = chunk.encode()
    for a, b in itertools.pairwise(data):
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
best = max(pairs.values())
first = min(p for p, count in pairs.items() if count == best)  # ties go to the smaller pair of ids
assert tokenizer.merges[0] == first
print(f"most frequent pair by hand: {bytes(first)!r}, {best} times; BPE's first merge agrees")

# %%


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """ids with every occurrence of `pair` replaced by new_id, left to right and without overlaps: merging
    (97, 97) in [97, 97, 97] gives [new_id, 97]."""
    ### BEGIN SOLUTION
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged
    ### END SOLUTION


sample = "the cat sat on the mat."
ids = tokenizer.encode(sample)
by_hand = []
for chunk in tokenizer.split_regex.findall(sample):  # the merges in the order they were learned, chunk by chunk
    chunk_ids = list(chunk.encode())
    for rank, pair in enumerate(tokenizer.merges):
        chunk_ids = merge(chunk_ids, pair, 256 + rank)
    by_hand += chunk_ids
assert by_hand == ids  # encoding is the merges, applied in order
print(f"{sample!r}: {len(sample.encode())} bytes -> {len(ids)} tokens:", [tokenizer.decode([i]) for i in ids])
assert tokenizer.decode(ids) == sample and len(ids) < len(sample.encode()) / 2
emoji = "a new word: 🐈"
assert tokenizer.decode(tokenizer.encode(emoji)) == emoji  # never an unknown token: bytes cover everything
print("lesson 20 ok: BPE merges the most frequent pairs, and any text round-trips")
