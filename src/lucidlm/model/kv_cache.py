"""Key/value caches for fast decoding.

Without a cache, producing token t+1 runs the model over all t tokens again. With one, each step runs the new
token through the model and attends over the keys and values that earlier steps stored. The memory is
allocated once for the whole context, so decoding never re-allocates.

Every cache answers the same questions for `GPT.forward`: how long will the longest sequence be after the T
new tokens (`end`), at which positions do they sit (`positions`), which cached keys may each new query see
(`attention_mask`), and where do this pass's keys and values go (`update`, then `advance` once every layer
has stored them).

- `KVCache`: every row continues at the same position (one prompt, or a batch of prompts of one length).
- `SlotKVCache`: each row ("slot") holds its own sequence of its own length, so requests that arrived at
  different times decode together in one batched step. This is what `lucidlm serve` runs on.
- `StaticKVCache`: like KVCache, but every one-token step has the same shapes, for a compiled decoding step.
"""

from __future__ import annotations

import torch


def causal_mask(past: int, new: int, device: torch.device | str) -> torch.Tensor:
    """True where query i (of `new`, after `past` cached positions) may attend to key j. (new, past + new)"""
    query_position = torch.arange(past, past + new, device=device)[:, None]
    key_position = torch.arange(past + new, device=device)[None, :]
    return key_position <= query_position


class CacheMemory:
    """The memory every cache shares: keys and values for every layer and row, allocated once.

    One tensor per layer, each (rows, n_kv_head, max_len, head_dim), rather than one tensor for all layers: a
    compiled step that writes into a view of a shared tensor copies the whole tensor; into a tensor of its own,
    it writes in place."""

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
        shape = (rows, n_kv_head, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.rows_allocated, self.max_len, self.device = rows, max_len, self.keys[0].device

    def numel(self) -> int:
        """Numbers held, keys and values together."""
        return sum(t.numel() for t in self.keys + self.values)


class KVCache(CacheMemory):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.length = 0  # positions filled so far: the position of the next token

    def end(self, new: int) -> int:
        return self.length + new

    def positions(self, new: int) -> torch.Tensor:
        """Positions of the next `new` tokens. (new,)"""
        return torch.arange(self.length, self.length + new, device=self.device)

    def attention_mask(self, new: int) -> torch.Tensor | None:
        """None where attention needs no explicit mask: a pass from position 0 is plainly causal, and a
        single new token may see every cached key."""
        if self.length == 0 or new == 1:
            return None
        return causal_mask(self.length, new, self.device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's (B, n_kv_head, T, head_dim) keys and values; return all of them so far."""
        end = self.end(k.shape[2])
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

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
        self.lengths = [0] * self.rows_allocated  # positions filled in each row
        self.rows = slice(0, 0)
        self._positions: torch.Tensor | None = None

    def end(self, new: int) -> int:
        return max(self.lengths[self.rows]) + new

    def select(self, start: int, stop: int) -> None:
        """The rows the next forward pass reads and extends."""
        self.rows, self._positions = slice(start, stop), None

    def common_length(self) -> int | None:
        """The length the selected rows share, or None: rows at one length take KVCache's plain path (a
        slice to write, no mask for one new token), so one sequence decodes here as fast as in a KVCache."""
        lengths = self.lengths[self.rows]
        return lengths[0] if lengths and min(lengths) == max(lengths) else None

    def positions(self, new: int) -> torch.Tensor:
        """Each selected row's next `new` positions: (B, new), or (new,) when the rows share a length."""
        if self._positions is None or self._positions.shape[-1] != new:  # asked once per layer: build it once
            device, length = self.device, self.common_length()
            if length is not None:
                self._positions = torch.arange(length, length + new, device=device)
            else:
                starts = torch.tensor(self.lengths[self.rows], device=device)
                self._positions = starts[:, None] + torch.arange(new, device=device)
        return self._positions

    def attention_mask(self, new: int) -> torch.Tensor | None:
        """(B, 1, new, end): a query sees the keys at or before its own position in its own row; rows
        shorter than the longest selected one also hide the stale keys past their end. Rows of one length
        need KVCache's mask (none for one new token, or a plain causal pass from position 0)."""
        length = self.common_length()
        if length is not None:
            return None if length == 0 or new == 1 else causal_mask(length, new, self.device)
        query_position = self.positions(new)  # (B, new)
        key_position = torch.arange(self.end(new), device=self.device)
        return (key_position <= query_position[..., None]).unsqueeze(1)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, new = k.shape[0], k.shape[2]
        end = self.end(new)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for")
        keys, values = self.keys[layer][self.rows], self.values[layer][self.rows]  # views (B, K, max_len, D)
        length = self.common_length()
        if length is not None:
            keys[:, :, length:end], values[:, :, length:end] = k, v
        else:
            row = torch.arange(B, device=k.device)[:, None]  # (B, 1)
            position = self.positions(new)  # (B, new)
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
        for layer_memory in self.keys + self.values:
            layer_memory[target, :, :length] = layer_memory[source, :, :length]
        self.lengths[target], self.lengths[source] = length, 0
        self._positions = None


class StaticKVCache(CacheMemory):
    """One sequence (or a batch at one position) whose one-token steps all have the same shapes.

    KVCache returns the keys `[:length]`, a slice that grows by one each step, and counts in a Python int;
    a compiled step would see a new shape and a new constant every token, and compile again. Here the position
    lives in a tensor, and attention always reads all max_len positions, the ones not yet written masked out,
    so one compiled graph serves every position. The cache does not check its own length (that would read the
    tensor back into Python each step): the caller keeps the sequence within max_len, as generate_ids does.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        device = self.device
        self.position = torch.zeros((), dtype=torch.long, device=device)  # the position of the next token
        self.key_positions = torch.arange(self.max_len, device=device)

    def end(self, new: int) -> None:
        return None  # not known in Python: see the class's docstring

    def positions(self, new: int) -> torch.Tensor:
        return self.position + torch.arange(new, device=self.device)  # (new,)

    def attention_mask(self, new: int) -> torch.Tensor:
        """(new, max_len): each query sees the keys at or before its own position; unwritten ones lie after."""
        return self.key_positions <= self.positions(new)[:, None]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = self.positions(k.shape[2])
        self.keys[layer].index_copy_(2, positions, k)  # along the time axis of (B, K, max_len, D)
        self.values[layer].index_copy_(2, positions, v)
        return self.keys[layer], self.values[layer]

    def advance(self, n: int) -> None:
        self.position += n  # in place: the compiled step updates the same tensor

    def reset(self) -> None:
        self.position.zero_()

    # SlotKVCache's interface, for the one decoding loop (decode.py), over the one row this cache has
    def select(self, start: int, stop: int) -> None:
        """Its one row is every pass's."""

    def clear(self, row: int) -> None:
        self.reset()
