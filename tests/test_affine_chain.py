"""The chain of per-row affine maps (deltamem.kernels.affine_chain) against its PyTorch loop.

Both walks (forward: s ← M s + m in chunk order; backward: λ ← Mᵀ λ + μ in reverse), in one pass
and in two levels, on chunk counts around the group size and ranks that do and do not pad. On
CUDA when present, else through Triton's interpreter; skipped without triton.
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:  # before the first import of a kernel module
    os.environ["TRITON_INTERPRET"] = "1"

from deltamem.kernels.affine_chain import chain, chain_reference, group_size, use_two_levels  # noqa: E402
from deltamem.kernels.chunk_scan import triton_available  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
pytestmark = pytest.mark.skipif(not triton_available(), reason="triton not installed (or no CUDA and no interpreter)")


def make_chain(B: int, H: int, n: int, r: int, seed: int = 0):
    """Contractive random maps (as the scan's are: decays ≤ 1), offsets and start values, fp32."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(B, H, n, r, r, r, generator=g) * (0.9 / r**0.5)
    offsets = torch.randn(B, H, n, r, r, generator=g)
    x0 = torch.randn(B, H, r, r, generator=g)
    return tuple(t.to(DEVICE) for t in (maps, offsets, x0))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


@pytest.mark.parametrize("two_levels", ["0", "1"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize(
    "n,r,B,H", [(1, 8, 2, 2), (5, 8, 2, 1), (17, 8, 1, 1), (37, 5, 1, 2), (130, 3, 1, 1), (9, 16, 1, 1)]
)
def test_chain_matches_loop(
    monkeypatch: pytest.MonkeyPatch, two_levels: str, backward: bool, n: int, r: int, B: int, H: int
) -> None:
    """Every stored value and the final one; the interpreter costs per program, so B·H·r stays small."""
    monkeypatch.setenv("DELTAMEM_CHAIN_GROUPS", two_levels)
    maps, offsets, x0 = make_chain(B, H, n, r, seed=n + r)
    starts = torch.full(maps.shape[:-1], float("nan"), device=DEVICE)  # every entry must be written
    final = chain(maps, offsets, x0, starts, backward)
    want_starts, want_final = chain_reference(maps.double(), offsets.double(), x0.double(), backward)
    assert rel_err(final, want_final) <= 1e-5
    assert rel_err(starts, want_starts) <= 1e-5
    visited_first = starts[:, :, -1] if backward else starts[:, :, 0]
    assert torch.equal(visited_first, x0)  # the first value stored is the start value itself


def test_two_levels_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DELTAMEM_CHAIN_GROUPS", raising=False)
    assert not use_two_levels(127, 8) and use_two_levels(128, 8)
    assert not use_two_levels(4096, 16)  # r > 8 chains in one pass (TWO_LEVEL_MAX_RANK)
    monkeypatch.setenv("DELTAMEM_CHAIN_GROUPS", "1")
    assert use_two_levels(2, 8) and not use_two_levels(2, 16)
    monkeypatch.setenv("DELTAMEM_CHAIN_GROUPS", "0")
    assert not use_two_levels(4096, 8)
    monkeypatch.setenv("DELTAMEM_CHAIN_GROUPS", "yes")
    with pytest.raises(ValueError, match="DELTAMEM_CHAIN_GROUPS"):
        use_two_levels(10, 8)


@pytest.mark.parametrize("n,S", [(1, 2), (8, 2), (15, 2), (128, 8), (512, 16), (2048, 32), (8192, 64)])
def test_group_size_is_near_sqrt_n(n: int, S: int) -> None:
    assert group_size(n) == S
