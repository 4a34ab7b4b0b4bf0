"""The write strategies of δ-mem (METHOD.md §4) as objects, chosen by the config's `write` name.

* `TokenWrite` (`tsw`): every valid token reads, then writes (one delta-rule step per token).
* `SegmentWrite` (`ssw`): every token reads the state as it was at the start of the call; then one
  write per segment (a chat message or a sentence), from the segment's mean hidden state.
* `MultiStateWrite` (`msw`): token writes into H = 4 independent states (the layer's `heads`).

Callers ask the strategy, never the name: whether writes need segment ids, whether generated tokens
are written, how the layer turns a call's projections into reads and a new state, and how the public
release names the strategy (`memory_write_granularity`). The name stays the serialised form: it is
what `DeltaMemConfig.write`, our adapter files and the Hydra `memory/` group store.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UserError
from .scan import delta_scan, read_only

# (..., 4, H, r) projections -> q̃, k̃, v, β, each (..., H, r): the layer's activation (fused or reference)
Activate = Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]

# the release's granularity of a segment write, by segment unit, and back
_SEGMENT_GRANULARITY = {"message": "message_mean", "sentence": "sentence_mean"}
_TOKEN_GRANULARITY = "token"


class UnknownWriteStrategyError(UserError, ValueError):
    """A `write` name no strategy is registered under."""


class MissingSegmentsError(UserError, ValueError):
    """SSW was asked to write without segment ids (the release silently fell back to TSW)."""


class WriteStrategy:
    """How one forward call of a memory layer reads and writes its state.

    Attributes:
        name: the serialised name (`DeltaMemConfig.write`).
        state_heads: H of the paper's variant (`preset(name)`); the layer uses the config's value.
        needs_segments: writes need per-token segment ids (B, T).
        writes_during_decode: generated tokens are written as they decode (a segment's message is
            still open during generation, so a segment write cannot happen token by token).
    """

    name: ClassVar[str]
    state_heads: ClassVar[int]
    needs_segments: ClassVar[bool]
    writes_during_decode: ClassVar[bool]

    def write(
        self,
        pre: Tensor,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        beta: Tensor,
        valid: Tensor | None,
        state: Tensor,
        segment_ids: Tensor | None,
        activate: Activate,
        chunk_size: int,
    ) -> tuple[Tensor, Tensor]:
        """Reads and the new state of one writing call.

        pre: (B, T, 4, H, r) projections (zero at padding); q, k, v, beta: (B, T, H, r) activated;
        valid: (B, T) bool or None; state: (B, H, r, r) fp32 at call start; segment_ids: (B, T) long
        or None. Returns reads (B, T, H, r) and the state after the call (B, H, r, r).
        """
        raise NotImplementedError

    def release_granularity(self, segment_unit: str) -> str:
        """The release's `memory_write_granularity` for this strategy (and segment unit)."""
        raise NotImplementedError

    def release_unit(self, granularity: str, heads: int) -> str | None:
        """The segment unit of a release config with this granularity and head count, when the
        config describes this strategy; None when it does not."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class TokenWrite(WriteStrategy):
    """TSW: the gated delta rule at every valid token, read before write (METHOD.md §3)."""

    name = "tsw"
    state_heads = 1
    needs_segments = False
    writes_during_decode = True

    def write(self, pre, q, k, v, beta, valid, state, segment_ids, activate, chunk_size):
        return delta_scan(q, k, v, beta, valid, state, chunk_size=chunk_size)

    def release_granularity(self, segment_unit: str) -> str:
        return _TOKEN_GRANULARITY

    def release_unit(self, granularity: str, heads: int) -> str | None:
        return "message" if granularity == _TOKEN_GRANULARITY and self._fits(heads) else None

    def _fits(self, heads: int) -> bool:
        """Whether a release config with `heads` state heads is this variant (one state)."""
        return heads <= 1


class MultiStateWrite(TokenWrite):
    """MSW: token writes into H independent states, each with its own k̃, v, β; reads concatenated."""

    name = "msw"
    state_heads = 4

    def _fits(self, heads: int) -> bool:
        return heads > 1


class SegmentWrite(WriteStrategy):
    """SSW: reads against the call-start state, then one delta-rule write per segment, in order."""

    name = "ssw"
    state_heads = 1
    needs_segments = True
    writes_during_decode = False

    def write(self, pre, q, k, v, beta, valid, state, segment_ids, activate, chunk_size):
        if segment_ids is None:
            raise MissingSegmentsError(
                "SSW writes one state update per segment and needs segment ids for every write; "
                "pass segment_ids (message or sentence ids, -1 for unwritten tokens) or disable writes"
            )
        reads = read_only(q, state, valid)  # every token reads the state as it was at call start
        seg_pre, seg_valid = segment_means(pre, segment_ids, valid)
        _, seg_k, seg_v, seg_beta = activate(seg_pre)
        _, new_state = delta_scan(seg_k, seg_k, seg_v, seg_beta, seg_valid, state, chunk_size=chunk_size)
        return reads, new_state

    def release_granularity(self, segment_unit: str) -> str:
        return _SEGMENT_GRANULARITY[segment_unit]

    def release_unit(self, granularity: str, heads: int) -> str | None:
        units = {g: unit for unit, g in _SEGMENT_GRANULARITY.items()}
        return units.get(granularity)


def segment_means(pre: Tensor, segment_ids: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean pre-activation of every segment, for SSW's one-write-per-segment.

    The projections are linear, so the mean of A·x over a segment equals A·x̄ (METHOD.md §4).

    pre: (B, T, 4, H, r); segment_ids: (B, T) long, -1 for tokens outside every segment.
    Returns (B, N, 4, H, r) means in ascending segment-id order over the N ids present in the
    batch, and (B, N) bool marking the segments each sequence actually has.
    """
    if segment_ids.shape != pre.shape[:2]:
        raise ValueError(
            f"segment_ids shape {tuple(segment_ids.shape)} does not match the tokens {tuple(pre.shape[:2])}"
        )
    member = segment_ids >= 0
    if valid is not None:
        member = member & valid
    ids, position = torch.unique(segment_ids.masked_fill(~member, -1), return_inverse=True)
    has_unwritten = bool(ids.numel()) and int(ids[0]) < 0
    onehot = F.one_hot(position, ids.numel()).to(pre.dtype) * member[..., None].to(pre.dtype)  # (B, T, N)
    if has_unwritten:
        onehot = onehot[..., 1:]  # drop the column of id -1
    counts = onehot.sum(1)  # (B, N)
    sums = torch.einsum("btn,btf->bnf", onehot, pre.flatten(2))
    means = sums / counts.clamp_min(1)[..., None]
    return means.view(*means.shape[:2], *pre.shape[2:]), counts > 0


# ---------------------------------------------------------------------- the registry
STRATEGIES: dict[str, WriteStrategy] = {s.name: s for s in (TokenWrite(), SegmentWrite(), MultiStateWrite())}


def write_strategy(name: str) -> WriteStrategy:
    """The strategy registered under `name` (`tsw`, `ssw`, `msw`)."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise UnknownWriteStrategyError(
            f"unknown write strategy {name!r}; expected one of {', '.join(STRATEGIES)}"
        ) from None


def from_release(granularity: str, heads: int) -> tuple[WriteStrategy, str] | None:
    """(strategy, segment unit) a release config's `memory_write_granularity` and `num_state_heads`
    describe, or None when no strategy matches."""
    for strategy in STRATEGIES.values():
        unit = strategy.release_unit(granularity, heads)
        if unit is not None:
            return strategy, unit
    return None


__all__ = [
    "WriteStrategy",
    "TokenWrite",
    "SegmentWrite",
    "MultiStateWrite",
    "STRATEGIES",
    "write_strategy",
    "from_release",
    "segment_means",
    "MissingSegmentsError",
    "UnknownWriteStrategyError",
]
