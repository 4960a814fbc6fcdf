"""KV storage of the embedded engine: a pre-allocated slot cache for the running rows, and a prefix cache
of prompt beginnings shared by many requests (the tutor's system prompt).

Each running request owns one slot: its keys/values sit at columns 0..length-1, written in place as it
is prefilled and decoded. Joining or leaving never concatenates or re-pads the batch; a finished row's
slot is simply reused. Capacity grows by doubling (rarely: only when a longer request arrives)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Prefixes are cached at multiples of this many tokens (a prompt shares a prefix at block granularity).
PREFIX_BLOCK = 32


class SlotCache:
    """Keys and values per layer, [slots, kv heads, columns, head dim]; both dimensions grow on demand
    (slots up to `max_slots`), so an idle engine holds little memory."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, max_slots: int, capacity: int = 256):
        self._layers, self._heads, self._dim = layers, kv_heads, head_dim
        self.dtype = dtype
        self.max_slots = max_slots
        self.slots = 0
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._used: set[int] = set()
        self._resize(min(4, max_slots), capacity)

    def _resize(self, slots: int, capacity: int) -> None:
        import torch

        grown_keys, grown_values = [], []
        for index in range(self._layers):
            keys = torch.zeros((slots, self._heads, capacity, self._dim), dtype=self.dtype)
            values = torch.zeros((slots, self._heads, capacity, self._dim), dtype=self.dtype)
            if self.slots:
                keys[: self.slots, :, : self.capacity] = self.keys[index]
                values[: self.slots, :, : self.capacity] = self.values[index]
            grown_keys.append(keys)
            grown_values.append(values)
        self.keys, self.values = grown_keys, grown_values
        self.slots, self.capacity = slots, capacity

    def ensure(self, columns: int) -> None:
        """Make room for `columns` columns per slot (keeps what is cached)."""
        if columns > self.capacity:
            self._resize(self.slots, max(columns, 2 * self.capacity))

    def reserve(self, slots: int) -> None:
        """Room for `slots` rows: a burst of joiners grows the cache once rather than doubling (and
        copying every layer) several times while they are placed."""
        if slots > self.slots:
            self._resize(min(self.max_slots, max(slots, 2 * self.slots)), self.capacity)

    def take(self) -> int:
        """The lowest free slot (low slots keep the running rows contiguous)."""
        slot = next(index for index in range(self.max_slots) if index not in self._used)
        if slot >= self.slots:
            self._resize(min(self.max_slots, max(slot + 1, 2 * self.slots)), self.capacity)
        self._used.add(slot)
        return slot

    def release(self, slot: int) -> None:
        self._used.discard(slot)

    def move(self, source: int, target: int, length: int) -> None:
        """Move a row's first `length` columns to a free lower slot (compaction after rows leave)."""
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[target, :, :length] = keys[source, :, :length]
            values[target, :, :length] = values[source, :, :length]
        self._used.discard(source)
        self._used.add(target)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def load(self, slot: int, prefix: torch.Tensor) -> None:
        """Copy a cached prefix [layers, 2, heads, length, dim] into a slot's first columns."""
        length = prefix.shape[3]
        self.ensure(length)
        for index in range(self._layers):
            self.keys[index][slot, :, :length] = prefix[index, 0]
            self.values[index][slot, :, :length] = prefix[index, 1]

    def export(self, slot: int, length: int) -> torch.Tensor:
        import torch

        return torch.stack(
            [torch.stack((self.keys[i][slot, :, :length], self.values[i][slot, :, :length])) for i in range(self._layers)]
        )


class PrefixCache:
    """LRU of prompt prefixes' KV, looked up by block-aligned token prefixes, bounded in bytes.

    One entry holds the KV of one prompt's longest block-aligned prefix; every shorter block-aligned
    prefix of it points at the same tensor, so a prompt that shares only the system prompt still hits."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._bytes = 0
        # prefix tokens -> (entry id, length); entries: id -> (tensor, its keys)
        self._index: dict[tuple[int, ...], tuple[int, int]] = {}
        self._entries: OrderedDict[int, tuple[torch.Tensor, list[tuple[int, ...]]]] = OrderedDict()
        self._next = 0
        self.hits = 0
        self.hit_tokens = 0

    def lookup(self, tokens: list[int], adapter: str) -> tuple[torch.Tensor | None, int]:
        """The longest cached prefix, leaving at least one token to prefill (its logits are needed)."""
        for blocks in range((len(tokens) - 1) // PREFIX_BLOCK, 0, -1):
            found = self._index.get((adapter, *tokens[: blocks * PREFIX_BLOCK]))
            if found is not None:
                entry, length = found
                self._entries.move_to_end(entry)
                self.hits += 1
                self.hit_tokens += length
                return self._entries[entry][0][:, :, :, :length], length
        return None, 0

    def wants(self, tokens: list[int], adapter: str, cached: int) -> int:
        """Length worth storing for this prompt (0 = nothing new beyond what is cached)."""
        length = (len(tokens) - 1) // PREFIX_BLOCK * PREFIX_BLOCK
        if length <= cached or self._max_bytes <= 0:
            return 0
        return 0 if (adapter, *tokens[:length]) in self._index else length

    def store(self, tokens: list[int], adapter: str, kv: torch.Tensor) -> None:
        size = kv.numel() * kv.element_size()
        if size > self._max_bytes:
            return
        while self._bytes + size > self._max_bytes and self._entries:
            self._evict()
        entry = self._next
        self._next += 1
        length = kv.shape[3]
        keys = [(adapter, *tokens[: blocks * PREFIX_BLOCK]) for blocks in range(1, length // PREFIX_BLOCK + 1)]
        for key in keys:
            self._index[key] = (entry, len(key) - 1)
        self._entries[entry] = (kv, keys)
        self._bytes += size

    def drop(self, adapter: str) -> None:
        """Forget an unloaded adapter's prefixes."""
        for entry, (_, keys) in list(self._entries.items()):
            if keys and keys[0][0] == adapter:
                self._remove(entry)

    def _evict(self) -> None:
        self._remove(next(iter(self._entries)))

    def _remove(self, entry: int) -> None:
        tensor, keys = self._entries.pop(entry)
        self._bytes -= tensor.numel() * tensor.element_size()
        for key in keys:
            if self._index.get(key, (None,))[0] == entry:
                del self._index[key]
