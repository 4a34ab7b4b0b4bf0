"""Greedy decoding from a static KV cache, each decode step replayed from one CUDA graph.

Eager Hugging Face decoding at batch 1 is bound by the host: a 4B model's token costs ~33 ms of
Python and kernel launches against ~8 ms of GPU work, and δ-mem's per-layer hooks add host time
on top. `GraphDecoder` removes the host from the loop for the frozen model and δ-mem alike:

1. prefill runs eagerly into a `StaticCache` (δ-mem writes the prompt into its state as usual);
2. one decode step — forward, argmax, append to the output, advance the positions — is captured
   once as a CUDA graph over static buffers (token, positions, mask, KV cache, memory state);
3. every further token is one `graph.replay()`: no Python, no launches, no host sync until the end.

The graph is kept and reused while the batch size and cache length stay the same. δ-mem's state
must be updated in place for a replay to advance it: `DeltaMemModel.pin_state` moves each
layer's state into a persistent buffer, and the fused decode step writes there. Decoding is
greedy for a fixed number of tokens; rows that emit `eos_token_id` are padded after it, as HF
greedy `generate` pads finished rows.

`use_graph=False` runs the same static-cache steps eagerly (CPU, debugging): it is the oracle the
graph is tested against, and both are tested against HF `generate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from .decode_loops import capture_step
from .hf_compat import cache_argument, forward_accepts


def _hf_model(model: nn.Module) -> nn.Module:
    """The Hugging Face causal LM inside `model` (itself, or a DeltaMemModel's base model)."""
    return getattr(model, "base_model", model)


@dataclass
class _Buffers:
    """Static tensors the captured step reads and writes (fixed addresses across replays)."""

    token: Tensor  # (B, 1) long — the last token, input of the next step
    positions: Tensor  # (B, 1) long — its position id per row (left padding aware)
    cache_position: Tensor  # (1,) long — its slot in the KV cache
    mask: Tensor  # (B, L) long — padding mask over every cache slot (future slots 1)
    generated: Tensor  # (B, N) long — tokens produced so far
    step: Tensor  # (1,) long — index of the next column of `generated`


class GraphDecoder:
    """Greedy fixed-length decoding with a static KV cache and CUDA-graph decode steps.

    model: an HF causal LM or a `DeltaMemModel` (frozen weights; no autograd).
    use_graph: capture and replay the decode step (default: when the model is on CUDA).
    """

    def __init__(self, model: nn.Module, use_graph: bool | None = None):
        self.model = model
        self.hf = _hf_model(model)
        self.device = next(self.hf.parameters()).device
        self.use_graph = self.device.type == "cuda" if use_graph is None else use_graph
        if self.use_graph and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device, it is on {self.device}")
        self.cache_name = cache_argument(self.hf)
        self.pass_cache_position = forward_accepts(self.hf, "cache_position")
        self.keep = {"logits_to_keep": 1} if forward_accepts(self.hf, "logits_to_keep") else {}
        self.memory_writes_in_decode = getattr(model, "writes_during_decode", None)  # None: no δ-mem
        self.step_kwargs: dict[str, Any] = {}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captures = 0  # graphs captured so far (reuse keeps it at 1 for a fixed shape)
        self._key: tuple | None = None
        self._cache: Any = None
        self._buffers: _Buffers | None = None
        self._state_buffers: Any = None

    # ----------------------------------------------------------------- public
    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        max_new_tokens: int = 32,
        eos_token_id: int | None = None,
        pad_token_id: int = 0,
        **prefill_kwargs: Any,
    ) -> Tensor:
        """Prompt (B, T) + greedy continuation: (B, T + max_new_tokens) long.

        attention_mask: (B, T) with left padding (zeros first), or None for none.
        prefill_kwargs go to the prefill call only (δ-mem: `segment_ids`, `write`).
        """
        self.prefill(input_ids, attention_mask, max_new_tokens, **prefill_kwargs)
        self.decode(max_new_tokens - 1)
        return self.finish(input_ids, eos_token_id, pad_token_id)

    @torch.no_grad()
    def stream(
        self, input_ids: Tensor, max_new_tokens: int, eos_token_id: int | None = None, **prefill_kwargs: Any
    ) -> Iterator[int]:
        """Greedy tokens of a one-row prompt (1, T), one at a time, stopping after eos (not yielded).
        Interactive use: one host sync per token, the same steps (and graph) as `generate`."""
        if input_ids.shape[0] != 1:
            raise ValueError(f"stream decodes one row, got a batch of {input_ids.shape[0]}")
        self.prefill(input_ids, None, max_new_tokens, **prefill_kwargs)
        for index in range(max_new_tokens):
            if index:
                self.decode(1)
            token = int(self._buffers.generated[0, index])
            if token == eos_token_id:
                return
            yield token

    @torch.no_grad()
    def prefill(
        self, input_ids: Tensor, attention_mask: Tensor | None, max_new_tokens: int, **prefill_kwargs: Any
    ) -> None:
        """Run the prompt into a fresh static cache and take the first greedy token."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be a non-empty (batch, length) tensor, got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.device)
        if self.memory_writes_in_decode is not None:  # δ-mem: steps write unless SSW or writes are off
            write = self.memory_writes_in_decode and prefill_kwargs.get("write", None) is not False
            self.step_kwargs = {"write": write}
        self._prepare(B, T + max_new_tokens, max_new_tokens, input_ids.device)
        buf = self._buffers
        buf.mask.fill_(1)
        buf.mask[:, :T].copy_(mask)
        positions = (mask.long().cumsum(-1) - 1).clamp_min(0)  # (B, T), left padding starts at 0
        call = {self.cache_name: self._cache, "use_cache": True, **self.keep, **prefill_kwargs}
        if self.pass_cache_position:
            call["cache_position"] = torch.arange(T, device=self.device)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, **call)
        first = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        buf.token.copy_(first)
        buf.generated[:, :1].copy_(first)
        buf.positions.copy_(positions[:, -1:] + 1)
        buf.cache_position.fill_(T)
        buf.step.fill_(1)
        self._pin_memory_state()

    @torch.no_grad()
    def decode(self, steps: int) -> None:
        """`steps` more greedy tokens after `prefill` (graph replays, or eager static steps)."""
        if self._buffers is None:
            raise RuntimeError("call prefill before decode")
        room = self._buffers.generated.shape[1] - int(self._buffers.step)  # one sync, before the loop
        if steps > room:
            raise ValueError(f"{steps} decode steps asked for, but the cache has room for {room} more tokens")
        if not self.use_graph:
            for _ in range(steps):
                self._step()
            return
        if steps and self.graph is None:
            self._capture()  # the warm-up inside runs one real step
            steps -= 1
        for _ in range(steps):
            self.graph.replay()

    def finish(self, input_ids: Tensor, eos_token_id: int | None, pad_token_id: int) -> Tensor:
        """Prompt + generated tokens, padded after each row's first eos."""
        generated = self._buffers.generated.clone()
        if eos_token_id is not None:
            after_eos = (generated == eos_token_id).long().cumsum(-1) - (generated == eos_token_id).long() > 0
            generated = generated.masked_fill(after_eos, pad_token_id)
        return torch.cat([input_ids, generated], dim=1)

    # ----------------------------------------------------------------- internals
    def _prepare(self, batch: int, length: int, new_tokens: int, device: torch.device) -> None:
        """Static cache and buffers for (batch, cache length); kept, and reset, while the shape holds."""
        key = (batch, length, new_tokens, tuple(sorted(self.step_kwargs.items())))
        if key == self._key:
            self._cache.reset()
            return
        from transformers import StaticCache

        self._cache = StaticCache(config=self.hf.config, max_cache_len=length)
        long = dict(dtype=torch.long, device=device)
        self._buffers = _Buffers(
            token=torch.zeros(batch, 1, **long),
            positions=torch.zeros(batch, 1, **long),
            cache_position=torch.zeros(1, **long),
            mask=torch.ones(batch, length, **long),
            generated=torch.zeros(batch, new_tokens, **long),
            step=torch.zeros(1, **long),
        )
        self._key, self.graph, self._state_buffers = key, None, None

    def _pin_memory_state(self) -> None:
        """δ-mem: keep the state in the same buffers across calls so a captured graph stays valid."""
        pin = getattr(self.model, "pin_state", None)
        if pin is not None:
            self._state_buffers = pin(self._buffers.token.shape[0], self._state_buffers)

    def _step(self) -> None:
        """One decode step over the static buffers: every operation on device, no host sync."""
        buf = self._buffers
        call = {self.cache_name: self._cache, "use_cache": True, **self.keep, **self.step_kwargs}
        if self.pass_cache_position:
            call["cache_position"] = buf.cache_position
        out = self.model(input_ids=buf.token, attention_mask=buf.mask, position_ids=buf.positions, **call)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        buf.token.copy_(nxt)
        buf.generated.index_copy_(1, buf.step, nxt)
        buf.positions.add_(1)
        buf.cache_position.add_(1)
        buf.step.add_(1)

    def _capture(self) -> None:
        """Warm up on a side stream (one real step), then record the step as a graph."""
        attention = getattr(self.hf.config, "_attn_implementation", None)
        self.graph = capture_step(
            self._step, self.device,
            f"Something in the forward call synchronises with the host or copies a host tensor (attention "
            f"implementation: {attention!r}; transformers 5.17's eager-attention mask does, SDPA's does not). "
            "Load the backbone with attn_implementation='sdpa', or decode with GraphDecoder(model, use_graph=False).",
        )
        self.captures += 1
