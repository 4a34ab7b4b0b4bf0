"""Attach δ-mem to a frozen Hugging Face decoder, PEFT-style.

`attach_memory(model, config)` wraps the attention of every chosen decoder layer:

* a `DeltaMemLayer` is added as `self_attn.delta_mem` (its parameters are the only trainable ones);
* `self_attn.{q,k,v,o}_proj` become `CorrectedLinear` wrappers for the configured targets;
* a pre-hook on `self_attn` reads/writes the memory from the attention input;
* a pre-hook on the decoder (`model.model`) turns the 2-D attention mask of every call — also
  every step of `generate` — into per-token validity for the memory.

The result is a `DeltaMemModel`: a thin `nn.Module` around the HF model that adds state control
(reset, snapshot, restore, batching), writes on/off, segment ids for SSW, chunked history
writes and parameter summaries. It works for any decoder whose layers hold a `self_attn` with
`q_proj`, `k_proj`, `v_proj`, `o_proj` linears and take the normalised hidden state as the
attention's `hidden_states` (Qwen3, SmolLM3, Llama/SmolLM2, Mistral, …).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from .config import DeltaMemConfig
from .layer import CorrectedLinear, DeltaMemLayer
from .state import MemoryState


def right_padded(mask: Tensor) -> bool:
    """True when every row of a (B, T) 0/1 mask is ones then zeros (one host sync)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all()) if mask.shape[1] > 1 else True


class UnsupportedModelError(TypeError):
    """The model does not have the decoder/attention structure δ-mem attaches to."""


@dataclass
class MemoryContext:
    """What every memory layer needs to know about the current forward call."""

    write: bool = True
    valid: Tensor | None = None  # (B, T) bool for the tokens of this call
    segment_ids: Tensor | None = None  # (B, T) long, consumed by one call
    read_only_steps: bool = False  # set during generate for SSW decode steps
    unmasked_valid: Tensor | None = None  # validity of a right-padded call made without a key mask


@dataclass
class ParameterSummary:
    trainable: int
    frozen: int
    wrapped_modules: list[str] = field(default_factory=list)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / max(1, self.trainable + self.frozen)

    def __str__(self) -> str:
        return (
            f"trainable {self.trainable:,} | frozen {self.frozen:,} | "
            f"trainable share {100 * self.trainable_fraction:.3f}% | wrapped modules {len(self.wrapped_modules)}"
        )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's layer list of an HF causal LM (`model.model.layers`)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedModelError(f"{type(model).__name__} has no decoder layer list (expected model.model.layers)")
    return layers


def _attention_shapes(attn: nn.Module) -> tuple[int, int, int]:
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        if not isinstance(getattr(attn, name, None), nn.Linear):
            raise UnsupportedModelError(f"{type(attn).__name__} has no nn.Linear {name}; δ-mem cannot wrap it")
    return attn.o_proj.out_features, attn.q_proj.out_features, attn.k_proj.out_features


class DeltaMemModel(nn.Module):
    """An HF causal LM with δ-mem attached. Call it, or `.generate`, as the wrapped model."""

    def __init__(self, model: nn.Module, config: DeltaMemConfig):
        super().__init__()
        self.base_model = model
        self.memory_config = config.resolve_layers(len(decoder_layers(model)))  # a depth band → indices
        self.context = MemoryContext()
        self.memory_layers: dict[int, DeltaMemLayer] = {}
        self._hooks: list[Any] = []
        self._wrap()

    # ----------------------------------------------------------------- attachment
    def _wrap(self) -> None:
        layers = decoder_layers(self.base_model)
        for index in self.memory_config.layer_indices(len(layers)):
            if not 0 <= index < len(layers):
                raise ValueError(f"layer index {index} out of range: the model has {len(layers)} decoder layers")
            attn = getattr(layers[index], "self_attn", None)
            if attn is None:
                raise UnsupportedModelError(f"decoder layer {index} has no self_attn module")
            hidden, q_out, kv_out = _attention_shapes(attn)
            memory = DeltaMemLayer(self.memory_config, hidden, q_out, kv_out, index)
            memory.to(attn.q_proj.weight.device)
            if self.memory_config.b_init == "base_slice":
                memory.init_base_slice({"q": attn.q_proj.weight, "o": attn.o_proj.weight})
            attn.delta_mem = memory
            for target in self.memory_config.targets:
                name = f"{target}_proj"
                setattr(attn, name, CorrectedLinear(getattr(attn, name), memory, target))
            self._hooks.append(attn.register_forward_pre_hook(self._attention_pre_hook(memory), with_kwargs=True))
            self.memory_layers[index] = memory
        decoder = self.base_model.get_decoder()
        self._hooks.append(decoder.register_forward_pre_hook(self._capture_mask, with_kwargs=True))

    def _attention_pre_hook(self, memory: DeltaMemLayer):
        def run_memory(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, T, d)
            ctx = self.context
            write = ctx.write and not ctx.read_only_steps
            memory(x, ctx.valid, write, ctx.segment_ids if write else None)

        return run_memory

    def _capture_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Per-token validity of this call from the 2-D attention mask (left or right padding)."""
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        mask = kwargs.get("attention_mask")
        if mask is None:
            self.context.valid, self.context.unmasked_valid = self.context.unmasked_valid, None
            return
        if mask.dim() != 2:
            raise ValueError(
                f"δ-mem needs the 2-D (batch, length) attention mask to know which tokens are real; got a "
                f"{mask.dim()}-D mask. Pass the tokenizer's attention_mask, not a prepared 4-D mask."
            )
        T = tokens.shape[1]
        self.context.valid = mask[:, -T:].bool()

    def detach(self) -> nn.Module:
        """Remove δ-mem and return the original model, unchanged."""
        for hook in self._hooks:
            hook.remove()
        layers = decoder_layers(self.base_model)
        for index in self.memory_layers:
            attn = layers[index].self_attn
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                module = getattr(attn, name)
                if isinstance(module, CorrectedLinear):
                    setattr(attn, name, module.base_layer)
            del attn.delta_mem
        self.memory_layers = {}
        return self.base_model

    # ----------------------------------------------------------------- calls
    def forward(self, *args: Any, segment_ids: Tensor | None = None, write: bool | None = None, **kwargs: Any) -> Any:
        """Call the wrapped model. `write` overrides the current write mode for this call;
        `segment_ids` (B, T) feed SSW's segment writes."""
        with self._call_context(segment_ids, write):
            return self.base_model(*args, **kwargs)

    @torch.no_grad()
    def generate(self, *args: Any, segment_ids: Tensor | None = None, write: bool | None = None, **kwargs: Any) -> Any:
        """HF `generate` with the state carried from prefill through every decode step.

        Under SSW the prompt is written with `segment_ids` during prefill and generated tokens only
        read: their message is not complete until generation ends."""
        decode_steps = {"seen": False}

        def decode_read_only(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not self.writes_during_decode:
                self.context.read_only_steps = decode_steps["seen"]
                if decode_steps["seen"]:
                    self.context.segment_ids = None
            decode_steps["seen"] = True

        hook = self.base_model.get_decoder().register_forward_pre_hook(decode_read_only, with_kwargs=True)
        try:
            with self._call_context(segment_ids, write):
                return self.base_model.generate(*args, **kwargs)
        finally:
            hook.remove()
            self.context.read_only_steps = False

    @contextlib.contextmanager
    def _call_context(self, segment_ids: Tensor | None, write: bool | None) -> Iterator[None]:
        ctx = self.context
        previous_write = ctx.write
        ctx.segment_ids = segment_ids
        if write is not None:
            ctx.write = write
        try:
            yield
        finally:
            ctx.write = previous_write
            ctx.segment_ids = None
            ctx.valid = None

    @contextlib.contextmanager
    def writes(self, enabled: bool) -> Iterator[None]:
        """`with model.writes(False): ...` — read-only memory for every call inside."""
        previous, self.context.write = self.context.write, enabled
        try:
            yield
        finally:
            self.context.write = previous

    def write_history(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """Write a history into the state in chunks of at most `chunk_size` tokens, the state carried
        from chunk to chunk (memory beyond the context window). No KV cache is kept: each chunk is
        its own forward call starting at position 0. Gradients flow if enabled by the caller.
        A row's state is that of writing its own (mask = 1) tokens alone: padding anywhere is moved
        behind them first."""
        if attention_mask is not None and not right_padded(attention_mask):
            # each row's own tokens first (stable order), so its chunks start at its first token and
            # its state equals writing it alone, whatever padding its batch partners need
            order = torch.argsort((attention_mask == 0).to(torch.int8), dim=1, stable=True)  # (B, T)
            input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
            segment_ids = None if segment_ids is None else segment_ids.gather(1, order)
        T = input_ids.shape[1]
        step = T if chunk_size is None else chunk_size
        decoder = self.base_model.get_decoder()
        # Right padding under causal attention: no real token sees a later (padding) one, so the
        # decoder runs with no key mask (SDPA's is_causal path, its fastest kernels) and the memory
        # still skips the padding; states and gradients equal writing each row alone (tested).
        for start in range(0, T, step):  # a loop over chunks, each chunk processed in parallel
            part = slice(start, start + step)
            segments = None if segment_ids is None else segment_ids[:, part]
            with self._call_context(segments, write=True):
                self.context.unmasked_valid = None if attention_mask is None else attention_mask[:, part].bool()
                decoder(input_ids=input_ids[:, part], attention_mask=None, use_cache=False)

    # ----------------------------------------------------------------- state
    def reset_state(self, samples: Tensor | None = None) -> None:
        """Forget everything written (all samples, or only those selected by index/bool mask)."""
        for memory in self.memory_layers.values():
            if samples is None or memory.state is None:
                memory.reset_state()
            else:
                keep = torch.ones(memory.state.shape[0], dtype=torch.bool, device=memory.state.device)
                keep[samples] = False
                kept = memory.state * keep[:, None, None, None].to(memory.state.dtype)
                memory.state = kept if memory.pinned is None else memory.pinned.copy_(kept)

    @property
    def writes_during_decode(self) -> bool:
        """Whether generated tokens are written (TSW/MSW) or only read (SSW: their message is open)."""
        return self.memory_config.strategy.writes_during_decode

    def pin_state(self, batch_size: int, buffers: dict[int, Tensor] | None = None) -> dict[int, Tensor]:
        """Move every layer's state into persistent fp32 buffers (reused when their shapes fit), which
        later writes update in place: a captured CUDA graph of a decode step stays valid across calls.
        Returns the buffers; `reset_state` unpins."""
        config = self.memory_config
        shape = (batch_size, config.num_state_heads, config.rank, config.rank)
        out: dict[int, Tensor] = {}
        for i, memory in self.memory_layers.items():
            buffer = None if buffers is None else buffers.get(i)
            if buffer is None or buffer.shape != shape:
                buffer = torch.zeros(shape, dtype=torch.float32, device=memory.in_proj.device)
            memory.pin(buffer)
            out[i] = buffer
        return out

    def get_state(self) -> MemoryState:
        """Every layer's state as references: later writes (the fused GPU decode step updates in
        place) change them; `.clone()` keeps a snapshot. `set_state` always stores copies."""
        return MemoryState({i: m.state for i, m in self.memory_layers.items()})

    def set_state(self, state: MemoryState) -> None:
        missing = set(self.memory_layers) - set(state.layers)
        if missing:
            raise KeyError(f"state has no entry for memory layers {sorted(missing)}")
        for i, memory in self.memory_layers.items():
            layer_state = state.layers[i]
            memory.pinned = None
            memory.state = None if layer_state is None else layer_state.clone()  # decode updates in place
            memory.reads = None

    def detach_state(self) -> None:
        """Cut the autograd history of the stored state (keep values, drop the graph)."""
        for memory in self.memory_layers.values():
            if memory.state is not None:
                memory.state = memory.state.detach()

    # ----------------------------------------------------------------- parameters
    def memory_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for i, memory in self.memory_layers.items():
            for name, param in memory.named_parameters():
                yield f"layers.{i}.{name}", param

    def freeze_backbone(self) -> None:
        """Only δ-mem parameters require grad; the backbone is frozen and in eval mode."""
        self.base_model.requires_grad_(False)
        for _, param in self.memory_parameters():
            param.requires_grad_(True)
        self.base_model.eval()

    def train(self, mode: bool = True) -> "DeltaMemModel":
        """Memory layers follow `mode`; the frozen backbone always stays in eval mode (no dropout)."""
        self.training = mode
        self.base_model.eval()
        for memory in self.memory_layers.values():
            memory.train(mode)
        return self

    def parameter_summary(self) -> ParameterSummary:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        wrapped = [
            f"model.layers.{i}.self_attn.{t}_proj" for i in self.memory_layers for t in self.memory_config.targets
        ]
        return ParameterSummary(trainable, frozen, wrapped)


def attach_memory(model: nn.Module, config: DeltaMemConfig, freeze: bool = True) -> DeltaMemModel:
    """Wrap `model` with δ-mem as described by `config`; freeze the backbone unless told not to."""
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing:
        raise ValueError(
            "δ-mem writes its state during the forward pass; gradient checkpointing would re-run it. "
            "Disable gradient checkpointing on the backbone."
        )
    wrapped = DeltaMemModel(model, config)
    if freeze:
        wrapped.freeze_backbone()
    return wrapped
