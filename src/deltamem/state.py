"""Snapshots of the δ-mem state: save, restore, batch.

A `MemoryState` maps each wrapped layer's index to its state tensor (B, H, r, r), or to None for
a layer that has not been written (all zeros). It is how a history written once is reused for
many questions: write, snapshot, `expand(n)`, answer n questions in one batch, restore.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


@dataclass
class MemoryState:
    layers: dict[int, Tensor | None]

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "MemoryState":
        return MemoryState({i: None if s is None else fn(s) for i, s in self.layers.items()})

    @property
    def batch_size(self) -> int | None:
        sizes = {s.shape[0] for s in self.layers.values() if s is not None}
        if len(sizes) > 1:
            raise ValueError(f"inconsistent batch sizes across layers: {sorted(sizes)}")
        return sizes.pop() if sizes else None

    def clone(self) -> "MemoryState":
        """A detached copy that later writes cannot change."""
        return self._map(lambda s: s.detach().clone())

    def to(self, device: torch.device | str) -> "MemoryState":
        return self._map(lambda s: s.to(device))

    def expand(self, n: int) -> "MemoryState":
        """Repeat every sample n times in place order: [a, b] -> [a]*n + [b]*n."""
        return self._map(lambda s: s.repeat_interleave(n, dim=0))

    def select(self, index: Tensor | list[int]) -> "MemoryState":
        """Keep the samples at `index` (a list or a long/bool tensor)."""
        return self._map(lambda s: s[torch.as_tensor(index, device=s.device)])

    @staticmethod
    def cat(states: list["MemoryState"]) -> "MemoryState":
        """Stack several snapshots along the batch; layers never written in any become None."""
        if not states:
            raise ValueError("cannot concatenate an empty list of states")
        keys = set(states[0].layers)
        if any(set(s.layers) != keys for s in states):
            raise ValueError("states cover different layers")
        sizes = [s.batch_size for s in states]
        if any(b is None for b in sizes) and not all(b is None for b in sizes):
            raise ValueError("cannot stack written and never-written states; expand zeros explicitly")
        out: dict[int, Tensor | None] = {}
        for i in keys:
            parts = [s.layers[i] for s in states]
            out[i] = None if all(p is None for p in parts) else torch.cat(parts, dim=0)
        return MemoryState(out)

    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.layers.values() if s is not None)
