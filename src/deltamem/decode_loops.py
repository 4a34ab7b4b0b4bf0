"""The token loop after each prompt, eager or replayed from a CUDA graph (used by `evals.decoding.ChatDecoder`).

Both loops start from the state after a batch's prompt (the last position's logits, the KV cache,
the mask and the last position ids) and give each row its tokens up to its first stop token or
its `max_new_tokens`, padded after. They differ in how a step runs:

* `EagerLoop`: one forward call per token over the growing KV cache, with any backend. It is the
  CPU path and the oracle.
* `StaticLoop`: rows through a graph-safe backend. The prompt's cache is copied into a
  `StaticCache` with room for every new token. Its length is rounded up to `bucket` slots, so one
  captured graph serves every batch of the same size. Each step then reads and writes fixed
  buffers: token, position ids, cache slot, mask, outputs, the done flags, the rows' sampling
  settings, generators and noise, and δ-mem's pinned state. On CUDA one step is captured as a graph
  and replayed, with no Python, launches or host sync per token (`deltamem.graph_decode` gives the
  same for one prompt); sampled rows need `row_sampling.graph_sampling_available()`, their
  generators registered with the graph. One sync every `stop_check_every` steps asks whether
  every row has stopped.

Both select tokens through `row_sampling.RowSampler` (greedy, or sampled with each row's settings
and seeded generator), so a row's tokens are the same in either loop.

`use_graph=False` runs the static steps eagerly: on CPU a test keeps them token-identical to
`EagerLoop`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .hf_compat import forward_accepts
from .row_sampling import RowSampler, RowSettings, graph_sampling_available, row_sampler

Forward = Callable[..., tuple[Tensor, Any]]  # DecoderBackend.forward


@dataclass
class AfterPrompt:
    """What a batch's prompt left: the input of either loop."""

    logits: Tensor  # (B, V) fp32, the last prompt position
    cache: Any  # the KV cache over the prefix and the prompts (T0 slots)
    mask: Tensor  # (B, T0) long, 0 on left padding
    position: Tensor  # (B,) long, the last prompt token's position id
    limit: Tensor  # (B,) long, each row's max_new_tokens
    steps: int  # the largest max_new_tokens (a host int)


@dataclass
class RowBook:
    """Each row's output so far, kept on device by both loops (fixed addresses: a graph replays it)."""

    out: Tensor  # (B, steps) long, pad after a row's end
    lengths: Tensor  # (B,) long, tokens written per row
    done: Tensor  # (B,) bool, the row has stopped or reached its limit
    limit: Tensor  # (B,) long, each row's max_new_tokens
    step: Tensor  # (1,) long, the column the next token goes to

    @classmethod
    def empty(cls, batch: int, steps: int, device: torch.device) -> RowBook:
        long = dict(dtype=torch.long, device=device)
        return cls(torch.zeros(batch, steps, **long), torch.zeros(batch, **long),
                   torch.zeros(batch, dtype=torch.bool, device=device), torch.zeros(batch, **long),
                   torch.zeros(1, **long))

    def start(self, limit: Tensor, pad_id: int) -> None:
        self.out.fill_(pad_id)
        self.lengths.zero_()
        self.done.zero_()
        self.limit.copy_(limit)
        self.step.zero_()

    def take(self, token: Tensor, stops: Tensor, pad_id: int) -> Tensor:
        """Book each row's next token (B,); returns the next step's input (pad for stopped rows)."""
        self.done |= self.step >= self.limit
        finished_now = ~self.done & torch.isin(token, stops)
        writing = ~self.done & ~finished_now
        self.out.index_copy_(1, self.step, torch.where(writing, token, pad_id)[:, None])
        self.lengths += writing.long()
        self.done |= finished_now
        self.step.add_(1)
        return torch.where(self.done, pad_id, token)


class EagerLoop:
    """One forward per token over the growing cache (any backend, any sampler)."""

    name = "eager"

    def __init__(self, pad_id: int, stops: Tensor, stop_check_every: int = 8):
        self.pad_id, self.stops, self.stop_check_every = pad_id, stops, stop_check_every

    def run(self, forward: Forward, start: AfterPrompt, settings: RowSettings | None = None) -> tuple[Tensor, Tensor]:
        """Tokens (B, steps) and lengths (B,) of every row (greedy where `settings` is None)."""
        logits, cache, mask, position = start.logits, start.cache, start.mask, start.position
        B, device = mask.shape[0], mask.device
        select = row_sampler(settings or RowSettings.greedy(B), logits.shape[-1], device)
        book = RowBook.empty(B, start.steps, device)
        book.start(start.limit, self.pad_id)
        for step in range(start.steps):
            next_ids = book.take(select(logits), self.stops, self.pad_id)  # (B,)
            if (step + 1) % self.stop_check_every == 0 and bool(book.done.all()):
                break
            if step + 1 == start.steps:
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.long, device=device)], dim=1)
            position = position + 1
            logits, cache = forward(next_ids[:, None], mask, position[:, None], cache, "decode", None)
        return book.out, book.lengths


def fits_static(cache: Any, length: int) -> bool:
    """Whether every layer of a dynamic cache holds all `length` positions (no sliding window)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(getattr(layer, "keys", None) is not None and layer.keys.shape[-2] == length
                                for layer in layers)


@dataclass
class _Buffers:
    """Fixed tensors one static step reads and writes (the same addresses across replays)."""

    token: Tensor  # (B, 1) long, the next step's input
    position: Tensor  # (B, 1) long, its position id
    cache_position: Tensor  # (1,) long, its cache slot
    mask: Tensor  # (B, L) long, the prompt's padding mask, 1 on every later slot
    book: RowBook  # the rows' outputs so far
    sampler: RowSampler  # the rows' settings, generators and noise


class StaticLoop:
    """Steps over a static cache, captured once as a CUDA graph (`use_graph`) and replayed."""

    name = "graph"

    def __init__(self, model: Any, pad_id: int, stops: Tensor, stop_check_every: int = 8,
                 use_graph: bool | None = None, bucket: int = 1024, state: Any = None):
        """model: the HF model whose config sizes the cache; state: a δ-mem model to pin (or None)."""
        self.model, self.pad_id, self.stops, self.stop_check_every = model, pad_id, stops, stop_check_every
        device = next(model.parameters()).device
        self.use_graph = device.type == "cuda" if use_graph is None else use_graph
        if self.use_graph and device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device, it is on {device}")
        self.bucket, self.memory = int(bucket), state
        # transformers ≤ 5.1x takes each step's cache slot as `cache_position`; later versions keep
        # the slot count on device inside the StaticCache (both capturable)
        self.pass_cache_position = forward_accepts(model, "cache_position")
        self.captures = 0  # graphs captured so far: one per (batch, cache length, steps)
        self._key: tuple | None = None
        self._cache: Any = None
        self._buffers: _Buffers | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._pinned: Any = None
        self._forward: Forward | None = None
        self._captured_sampling = False

    def run(self, forward: Forward, start: AfterPrompt, settings: RowSettings | None = None) -> tuple[Tensor, Tensor]:
        """Tokens (B, steps) and lengths (B,) of every row (greedy where `settings` is None)."""
        B, T0 = start.mask.shape
        settings = settings or RowSettings.greedy(B)
        if settings.any_sample and self.use_graph and not graph_sampling_available():
            raise ValueError("this torch cannot register a generator with a CUDA graph: decode sampled rows eagerly")
        length = -(-(T0 + start.steps) // self.bucket) * self.bucket  # room for every new token
        self._prepare(B, length, start.steps, start.mask.device, start.logits.shape[-1], settings.any_sample)
        buf = self._buffers
        buf.sampler.load(settings)
        self._fill_cache(start.cache, T0)
        start.cache = None  # the dynamic copy is no longer needed: free it before decoding
        buf.mask.fill_(1)
        buf.mask[:, :T0].copy_(start.mask)
        buf.book.start(start.limit, self.pad_id)
        buf.position.copy_(start.position[:, None])
        buf.cache_position.fill_(T0 - 1)  # the slot before the first new token's
        self._select(start.logits)
        if self.memory is not None and self.use_graph:  # δ-mem: state in fixed buffers, updated in place
            self._pinned = self.memory.pin_state(B, self._pinned)
        self._forward = forward
        remaining = start.steps - 1
        while remaining > 0:
            if bool(buf.book.done.all()):
                break
            chunk = min(self.stop_check_every, remaining)
            for _ in range(chunk):
                self._replay()
            remaining -= chunk
        return buf.book.out.clone(), buf.book.lengths.clone()

    # ----------------------------------------------------------------- internals
    def _prepare(self, batch: int, length: int, steps: int, device: torch.device, vocab: int,
                 samples: bool) -> None:
        """Buffers (and, on CUDA, the graph) for this shape; a graph captured greedy-only is not
        reused for a sampled batch (a sampled graph serves greedy rows too)."""
        key = (batch, length, steps, vocab)
        if key == self._key and samples and not self._captured_sampling:
            self._graph = None  # capture again, with the sampling kernels
        if key == self._key:
            self._cache.reset()
            return
        from transformers import StaticCache

        self._cache = StaticCache(config=self.model.config, max_cache_len=length)
        long = dict(dtype=torch.long, device=device)
        self._buffers = _Buffers(
            token=torch.zeros(batch, 1, **long), position=torch.zeros(batch, 1, **long),
            cache_position=torch.zeros(1, **long), mask=torch.ones(batch, length, **long),
            book=RowBook.empty(batch, steps, device), sampler=RowSampler(batch, vocab, device),
        )
        self._key, self._graph, self._pinned = key, None, None

    def _fill_cache(self, cache: Any, length: int) -> None:
        """Copy the prompt's keys and values (T0 slots per layer) into the static cache."""
        if not fits_static(cache, length):
            raise ValueError(f"the prompt's cache does not hold all {length} positions in every layer "
                             "(a sliding-window layer?): decode this backbone with the eager loop")
        slots = torch.arange(length, device=self._buffers.mask.device)
        for index, layer in enumerate(cache.layers):
            self._cache.update(layer.keys, layer.values, index, {"cache_position": slots})

    def _select(self, logits: Tensor) -> None:
        """Take each row's next token from `logits` (B, V) and book it, all on device."""
        buf = self._buffers
        buf.token.copy_(buf.book.take(buf.sampler(logits), self.stops, self.pad_id)[:, None])

    def _step(self) -> None:
        """One forward over the static buffers, then the selection."""
        buf = self._buffers
        buf.position.add_(1)
        buf.cache_position.add_(1)
        slot = buf.cache_position if self.pass_cache_position else None
        logits, _ = self._forward(buf.token, buf.mask, buf.position, self._cache, "decode", None, slot)
        self._select(logits)

    def _replay(self) -> None:
        if not self.use_graph:
            self._step()
            return
        if self._graph is None:
            self._capture()  # its warm-up runs one real step
            return
        self._graph.replay()

    def _capture(self) -> None:
        sampler = self._buffers.sampler
        self._graph = capture_step(
            self._step, self._buffers.mask.device,
            "Something in the step syncs with the host (an eager-attention mask does; SDPA's does not). "
            "Decode with decoding.loop=eager.",
            generators=sampler.generators if sampler.any_sample else (),
        )
        self._captured_sampling = sampler.any_sample
        self.captures += 1


def capture_step(step: Callable[[], None], device: torch.device, hint: str,
                 generators: Sequence[torch.Generator] = ()) -> torch.cuda.CUDAGraph:
    """Run `step` once for real on a side stream (the warm-up), then record it as a CUDA graph whose
    replays rerun it on the same buffers. `generators` (user generators that `step` draws from) are
    registered with the graph, so each replay advances them as an eager step would. A failed
    capture names itself and `hint`."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    try:
        with torch.cuda.graph(graph):  # records the kernels; none of them runs now
            step()
    except RuntimeError as error:
        raise RuntimeError(f"capturing the decode step as a CUDA graph failed ({error}). {hint}") from error
    return graph
