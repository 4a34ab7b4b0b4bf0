"""Typed configuration of the δ-mem memory (METHOD.md §2–§5).

One `DeltaMemConfig` describes everything that shapes the memory parameters or changes what
the memory computes. It is what Hydra's `memory/` group instantiates, what our adapter files
store as JSON, and what converts to and from the public release's `delta_mem_config.json`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .errors import UserError
from .write_strategy import STRATEGIES, UnknownWriteStrategyError, WriteStrategy, write_strategy

WriteName = Literal["tsw", "ssw", "msw"]  # a key of `write_strategy.STRATEGIES`
SegmentUnit = Literal["message", "sentence"]
BInit = Literal["base_slice", "zero"]
Target = Literal["q", "k", "v", "o"]

VALID_TARGETS: tuple[str, ...] = ("q", "k", "v", "o")
# `layers` by depth band, resolved against the backbone's layer count n: band k of three holds the
# layers [⌊k·n/3⌋, ⌊(k+1)·n/3⌋) (24 layers: 0–7, 8–15, 16–23); `all` is every layer.
LAYER_BANDS: dict[str, int | None] = {"all": None, "lower_third": 0, "middle_third": 1, "upper_third": 2}


class ConfigError(UserError, ValueError):
    """A memory configuration that cannot describe a valid δ-mem module."""


@dataclass(frozen=True)
class DeltaMemConfig:
    """Shape and behaviour of the δ-mem memory attached to each wrapped attention layer.

    Attributes:
        write: write strategy. `tsw` writes every token, `ssw` one write per segment,
            `msw` writes every token into `num_state_heads` independent states.
        rank: r, the side of each square state (rows = value dims, columns = key dims).
        num_state_heads: H. 1 for TSW/SSW, 4 for MSW in the paper.
        alpha: correction scale numerator; corrections are scaled by s = alpha / rank.
        targets: which projections receive a correction (q and o by default; k, v optional).
        layers: decoder-layer indices to wrap (None or `all` = all layers), or a depth band
            (`lower_third`, `middle_third`, `upper_third`) resolved when the memory is attached.
        beta_bias_init: initial b_β (−1.5 gives β ≈ 0.18 at start).
        b_init: `base_slice` (release default) or `zero` init of the correction matrices.
        base_slice_scale: scale of the unit-norm base-weight columns copied into B.
        segment_unit: for SSW, what a segment is when callers derive ids from chats.
        state_dtype_between_calls: `float32` (fixed behaviour) or `bfloat16` (the release's
            defect, reproduced on request: the state is rounded after every forward call).
        param_dtype: dtype of the memory parameters (fp32 keeps master weights exact).
        compute_dtype: what the memory's projections and corrections compute in. `input` (default)
            casts the (small) parameters to the attention input's dtype, as bf16 autocast would: a
            bf16 backbone gets tensor-core GEMMs and no fp32 copies of its hidden states, with fp32
            master weights kept. `param` casts the hidden states to `param_dtype` instead (exact
            fp32 projections at a bf16 backbone's expense). Equal whenever the backbone runs in
            `param_dtype`. The gates, the scan and the state are fp32 either way.
        scan_chunk_size: chunk length of the parallel scan.
    """

    write: WriteName = "tsw"
    rank: int = 8
    num_state_heads: int = 1
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "o")
    layers: tuple[int, ...] | str | None = None
    beta_bias_init: float = -1.5
    b_init: BInit = "base_slice"
    base_slice_scale: float = 0.05
    segment_unit: SegmentUnit = "message"
    state_dtype_between_calls: Literal["float32", "bfloat16"] = "float32"
    param_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    compute_dtype: Literal["input", "param"] = "input"
    scan_chunk_size: int = 64

    def __post_init__(self) -> None:
        # Hydra/OmegaConf hands lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "targets", tuple(self.targets))
        if isinstance(self.layers, str):
            if self.layers not in LAYER_BANDS:
                bands = list(LAYER_BANDS)
                raise ConfigError(f"unknown layers {self.layers!r}; expected a list of indices or one of {bands}")
        elif self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        try:
            write_strategy(self.write)
        except UnknownWriteStrategyError as error:
            raise ConfigError(str(error)) from None
        if self.rank < 1 or self.num_state_heads < 1:
            raise ConfigError(f"rank and num_state_heads must be ≥ 1, got {self.rank}, {self.num_state_heads}")
        bad = [t for t in self.targets if t not in VALID_TARGETS]
        if bad or not self.targets:
            raise ConfigError(f"targets must be a non-empty subset of {VALID_TARGETS}, got {self.targets}")
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"targets repeat an entry: {self.targets}")
        if self.b_init not in ("base_slice", "zero"):
            raise ConfigError(f"unknown b_init {self.b_init!r}; expected base_slice or zero")
        if self.segment_unit not in ("message", "sentence"):
            raise ConfigError(f"unknown segment_unit {self.segment_unit!r}; expected message or sentence")
        if self.compute_dtype not in ("input", "param"):
            raise ConfigError(f"unknown compute_dtype {self.compute_dtype!r}; expected input or param")
        if self.scan_chunk_size < 1:
            raise ConfigError(f"scan_chunk_size must be ≥ 1, got {self.scan_chunk_size}")

    @property
    def strategy(self) -> WriteStrategy:
        """The write strategy object `write` names (what callers ask instead of testing the name)."""
        return write_strategy(self.write)

    @property
    def memory_dim(self) -> int:
        """D = H·r, the width of a read vector ρ and of every memory projection."""
        return self.num_state_heads * self.rank

    @property
    def scale(self) -> float:
        """s = α / r, the factor on every correction."""
        return self.alpha / self.rank

    def layer_indices(self, num_layers: int) -> tuple[int, ...]:
        """The decoder layers to wrap in a backbone of `num_layers` layers (a band resolved)."""
        if not isinstance(self.layers, str):
            return tuple(range(num_layers)) if self.layers is None else self.layers
        band = LAYER_BANDS[self.layers]
        if band is None:
            return tuple(range(num_layers))
        indices = tuple(range(band * num_layers // 3, (band + 1) * num_layers // 3))
        if not indices:
            raise ConfigError(f"layers={self.layers}: a backbone of {num_layers} decoder layers has no such third")
        return indices

    def resolve_layers(self, num_layers: int) -> "DeltaMemConfig":
        """This config with a depth band replaced by its indices (`all` by None), as adapters store it."""
        if not isinstance(self.layers, str):
            return self
        return self.replace(layers=None if self.layers == "all" else self.layer_indices(num_layers))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["targets"] = list(self.targets)
        out["layers"] = self.layers if self.layers is None or isinstance(self.layers, str) else list(self.layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DeltaMemConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown δ-mem config fields: {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> "DeltaMemConfig":
        return dataclasses.replace(self, **changes)


def preset(name: str, **overrides: Any) -> DeltaMemConfig:
    """The paper's three variants: `tsw`, `ssw` (rank 8, one state) and `msw` (four states)."""
    presets = {name: dict(write=name, num_state_heads=s.state_heads) for name, s in STRATEGIES.items()}
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; expected one of {sorted(presets)}")
    return DeltaMemConfig(**{**presets[name], **overrides})


__all__ = ["DeltaMemConfig", "ConfigError", "preset", "VALID_TARGETS", "LAYER_BANDS"]
