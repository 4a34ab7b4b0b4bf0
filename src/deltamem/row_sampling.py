"""Each row's next token, greedy or sampled with its own settings and seeded generator (both token loops).

A row's tokens never depend on the rows beside it: every row has its own temperature, top-k, top-p
and `torch.Generator`, seeded per batch. Sampling one token from the filtered distribution p is
done the way `torch.multinomial(p, 1, generator=g)` does it (ATen's one-sample path, the same code
for every device): draw q ~ Exp(1) over the vocabulary from g, and take argmax(p / q). So the
tokens equal the per-row `multinomial` calls the decoder made before (tests/test_row_sampling.py,
on CPU and, where a GPU is, on CUDA), but

* the rows are selected in one vectorised argmax instead of B `multinomial` calls, each with its
  own input checks, and
* every buffer has a fixed address, so `StaticLoop` can capture the selection in its CUDA graph,
  the generators registered with the graph (`graph_sampling_available`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor


@dataclass
class RowSettings:
    """How each row of a batch picks its tokens (B entries per list)."""

    do_sample: list[bool]
    temperature: list[float] = field(default_factory=list)  # empty: 1.0 for every row
    top_k: list[int] = field(default_factory=list)  # 0: no top-k cut
    top_p: list[float] = field(default_factory=list)  # 1.0: no nucleus cut
    seeds: list[int | None] = field(default_factory=list)  # None: 0

    def __post_init__(self) -> None:
        B = len(self.do_sample)
        self.temperature = list(self.temperature) or [1.0] * B
        self.top_k = list(self.top_k) or [0] * B
        self.top_p = list(self.top_p) or [1.0] * B
        self.seeds = list(self.seeds) or [None] * B
        lengths = {len(self.temperature), len(self.top_k), len(self.top_p), len(self.seeds)}
        if lengths != {B}:
            raise ValueError(f"RowSettings: every list needs {B} entries (one per row), got lengths {sorted(lengths)}")

    @classmethod
    def greedy(cls, batch: int) -> RowSettings:
        return cls([False] * batch)

    @property
    def any_sample(self) -> bool:
        return any(self.do_sample)


def graph_sampling_available() -> bool:
    """Whether this torch can register a user `torch.Generator` with a CUDA graph (sampled rows in
    `StaticLoop`'s graph need it)."""
    return hasattr(torch.cuda, "CUDAGraph") and hasattr(torch.cuda.CUDAGraph, "register_generator_state")


def filtered_probs(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """Probabilities after temperature, top-k and top-p (nucleus), per row.

    logits (B, V) fp32; temperature, top_p (B, 1) fp32; top_k (B, 1) long, V where a row has no cut.
    The nucleus keeps the tokens whose higher-ranked mass is below top_p, so the top token stays.
    """
    scaled = logits / temperature
    sorted_logits, order = scaled.sort(dim=-1, descending=True)  # (B, V)
    ranks = torch.arange(scaled.shape[-1], device=scaled.device)[None]
    sorted_logits = sorted_logits.masked_fill(ranks >= top_k, float("-inf"))
    sorted_probs = sorted_logits.softmax(-1)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass strictly above each token
    sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))
    filtered = torch.full_like(scaled, float("-inf")).scatter(-1, order, sorted_logits)
    return filtered.softmax(-1)


class RowSampler:
    """Selects each row's next token from logits (B, V); its buffers keep their addresses across batches."""

    def __init__(self, batch: int, vocab: int, device: torch.device):
        self.batch, self.vocab, self.device = batch, vocab, torch.device(device)
        self.generators = [torch.Generator(device=self.device) for _ in range(batch)]
        self.sample = torch.zeros(batch, dtype=torch.bool, device=self.device)
        self.temperature = torch.ones(batch, 1, device=self.device)
        self.top_k = torch.full((batch, 1), vocab, dtype=torch.long, device=self.device)
        self.top_p = torch.ones(batch, 1, device=self.device)
        self.noise = torch.empty(batch, vocab, device=self.device)  # (B, V) Exp(1) draws, one row per generator
        self.any_sample = False

    def load(self, settings: RowSettings) -> RowSampler:
        """Copy a batch's settings into the buffers and seed each row's generator (a row that does
        not sample is seeded 0 and its draws are never used)."""
        if len(settings.do_sample) != self.batch:
            raise ValueError(f"RowSampler holds {self.batch} rows, the settings have {len(settings.do_sample)}")
        self.any_sample = settings.any_sample
        self.sample.copy_(torch.tensor(settings.do_sample, dtype=torch.bool))
        self.temperature.copy_(torch.tensor([[max(t, 1e-5)] for t in settings.temperature]))
        self.top_k.copy_(torch.tensor([[k if k > 0 else self.vocab] for k in settings.top_k]))
        self.top_p.copy_(torch.tensor([[p] for p in settings.top_p]))
        for generator, seed, sampled in zip(self.generators, settings.seeds, settings.do_sample):
            generator.manual_seed(int(seed or 0) if sampled else 0)
        return self

    def __call__(self, logits: Tensor) -> Tensor:
        """logits (B, V) fp32 → next tokens (B,) long."""
        greedy = logits.argmax(-1)
        if not self.any_sample:
            return greedy
        probs = filtered_probs(logits, self.temperature, self.top_k, self.top_p)
        for row, generator in enumerate(self.generators):  # B launches, no sync; recorded once in a graph
            self.noise[row].exponential_(1.0, generator=generator)
        return torch.where(self.sample, (probs / self.noise).argmax(-1), greedy)


def row_sampler(settings: RowSettings, vocab: int, device: torch.device) -> RowSampler:
    """A sampler for one batch, loaded with its settings."""
    return RowSampler(len(settings.do_sample), vocab, device).load(settings)


__all__: Sequence[str] = ["RowSettings", "RowSampler", "filtered_probs", "graph_sampling_available", "row_sampler"]
