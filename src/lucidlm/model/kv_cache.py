"""Key/value caches for fast decoding.

Without a cache, producing token t+1 runs the model over all t tokens again. With one, each step runs the new
token through the model and attends over the keys and values that earlier steps stored. The memory is
allocated once for the whole context, so decoding never re-allocates.

Both caches answer the same three questions for `GPT.forward`: at which positions do the T new tokens sit
(`positions`), which cached keys may each new query see (`attention_mask`), and where do this pass's keys
and values go (`update`, then `advance` once every layer has stored them).

- `KVCache`: every row continues at the same position (one prompt, or a batch of prompts of one length).
- `SlotKVCache`: each row ("slot") holds its own sequence of its own length, so requests that arrived at
  different times decode together in one batched step. This is what `lucidlm serve` runs on.
"""

from __future__ import annotations

import torch


def causal_mask(past: int, new: int, device: torch.device | str) -> torch.Tensor:
    """True where query i (of `new`, after `past` cached positions) may attend to key j. (new, past + new)"""
    query_position = torch.arange(past, past + new, device=device)[:, None]
    key_position = torch.arange(past + new, device=device)[None, :]
    return key_position <= query_position


class CacheMemory:
    """The memory both caches share: keys and values for every layer and row, allocated once.
    (n_layer, rows, n_kv_head, max_len, head_dim) each."""

    def __init__(
        self,
        n_layer: int,
        rows: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        shape = (n_layer, rows, n_kv_head, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len


class KVCache(CacheMemory):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.length = 0  # positions filled so far: the position of the next token

    def positions(self, new: int) -> torch.Tensor:
        """Positions of the next `new` tokens. (new,)"""
        return torch.arange(self.length, self.length + new, device=self.keys.device)

    def attention_mask(self, new: int) -> torch.Tensor | None:
        """None where attention needs no explicit mask: a pass from position 0 is plainly causal, and a
        single new token may see every cached key."""
        if self.length == 0 or new == 1:
            return None
        return causal_mask(self.length, new, self.keys.device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's (B, n_kv_head, T, head_dim) keys and values; return all of them so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for")
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Called once per forward pass, after every layer has stored its n new positions."""
        self.length += n

    def reset(self) -> None:
        self.length = 0


class SlotKVCache(CacheMemory):
    """Rows ("slots") that each hold an independent sequence with its own length.

    A forward pass works on the rows `start..stop-1` chosen with `select`: one row to read in a new prompt,
    all busy rows for a decoding step. Busy rows are kept at the front (`move` fills a freed row with the
    last busy one), so the rows of a pass are a slice of the cache, never a gathered copy.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lengths = [0] * self.keys.shape[1]  # positions filled in each row
        self.rows = slice(0, 0)
        self._positions: torch.Tensor | None = None

    def select(self, start: int, stop: int) -> None:
        """The rows the next forward pass reads and extends."""
        self.rows, self._positions = slice(start, stop), None

    def positions(self, new: int) -> torch.Tensor:
        """Each selected row's next `new` positions. (B, new)"""
        if self._positions is None or self._positions.shape[1] != new:  # asked once per layer: build it once
            device = self.keys.device
            starts = torch.tensor(self.lengths[self.rows], device=device)
            self._positions = starts[:, None] + torch.arange(new, device=device)
        return self._positions

    def attention_mask(self, new: int) -> torch.Tensor:
        """(B, 1, new, end): a query sees the keys at or before its own position in its own row; rows
        shorter than the longest selected one also hide the stale keys past their end."""
        query_position = self.positions(new)  # (B, new)
        end = max(self.lengths[self.rows]) + new
        key_position = torch.arange(end, device=self.keys.device)
        return (key_position <= query_position[..., None]).unsqueeze(1)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, new = k.shape[0], k.shape[2]
        end = max(self.lengths[self.rows]) + new
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for")
        row = torch.arange(B, device=k.device)[:, None]  # (B, 1)
        position = self.positions(new)  # (B, new)
        keys, values = self.keys[layer, self.rows], self.values[layer, self.rows]  # views (B, K, max_len, D)
        keys[row, :, position] = k.transpose(1, 2)  # each row writes at its own positions
        values[row, :, position] = v.transpose(1, 2)
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, n: int) -> None:
        for row in range(self.rows.start, self.rows.stop):
            self.lengths[row] += n
        self._positions = None

    def clear(self, row: int) -> None:
        self.lengths[row], self._positions = 0, None

    def move(self, source: int, target: int) -> None:
        """Copy row `source`'s sequence into row `target` (to close the gap a finished request left)."""
        length = self.lengths[source]
        self.keys[:, target, :, :length] = self.keys[:, source, :, :length]
        self.values[:, target, :, :length] = self.values[:, source, :, :length]
        self.lengths[target], self.lengths[source] = length, 0
        self._positions = None
