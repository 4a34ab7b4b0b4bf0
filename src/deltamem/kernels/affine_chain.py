"""Chaining per-row affine maps on the GPU: the serial middle pass of the chunk-parallel scan.

Every chunk n of the scan maps each state row's start value affinely to its end value. The
forward pass walks the chunks in order, s ← M_n s + m_n (storing each chunk's start row); the
backward pass walks them in reverse with the adjoint, λ ← M_nᵀ λ + μ_n (storing each chunk's end
λ). Both are one recurrence over visit steps u = 0 … n−1,

    x_{u+1} = A_u x_u + b_u,   A_u = M_u, b_u = m_u (forward);  A_u = M_{n−1−u}ᵀ, b_u = μ_{n−1−u} (backward),

storing x_u at the visited chunk before applying the map and x_n as the result.

* one pass — one program per row (grid B·H × r) walks all n steps: n dependent r×r mat-vecs.
* two levels — the steps in groups of S: (1) every group composes its S maps into one (A_g, b_g),
  groups side by side; (2) one program per row chains the ⌈n/S⌉ group maps, storing each group's
  start; (3) every group replays its S steps from its start, groups side by side, storing the
  per-chunk values. Serial depth S + n/S + S instead of n: 64 instead of 512 at 8K tokens.

DELTAMEM_CHAIN_GROUPS picks: `auto` (default) two levels from 128 chunks on, `1` always (tests),
`0` never; ranks above 8 always chain in one pass (see TWO_LEVEL_MAX_RANK). Each program holds one
r×r tile on one warp (no tl.dot, so r pads only to a power of two).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import kernel_choice
from .chunk_common import _n_static, triton

TWO_LEVEL_FROM = 128  # chunks; below this the two extra launches cost more than the shorter chain saves
# The group composition multiplies r×r tiles as a 3-D broadcast and sum. At r 16 this gave results
# 1e-3 off on an H100 (the interpreter and r ≤ 8 on the H100 agree with the loop), so larger ranks
# chain in one pass.
TWO_LEVEL_MAX_RANK = 8

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _step_map(maps_ptr, offsets_ptr, bh, n_chunks, i, u, R: tl.constexpr, RP: tl.constexpr, BACKWARD: tl.constexpr):
        """(A_u, b_u) of visit step u for row i, the flat index of the visited chunk's row, and
        whether u is a real step (u < n). A is loaded transposed for the backward walk."""
        rows = tl.arange(0, RP)
        real = u < n_chunks
        if BACKWARD:
            chunk = n_chunks - 1 - u
            tile = rows[None, :] * R + rows[:, None]  # A[a, b] = M[b, a]
        else:
            chunk = u
            tile = rows[:, None] * R + rows[None, :]
        at = (bh * n_chunks + chunk) * R + i  # (b, h, chunk, i)
        inside = (rows[:, None] < R) & (rows[None, :] < R) & real
        A = tl.load(maps_ptr + at * R * R + tile, mask=inside, other=0.0)  # (RP, RP)
        b = tl.load(offsets_ptr + at * R + rows, mask=(rows < R) & real, other=0.0)  # (RP,)
        return A, b, at, real

    @triton.jit
    def _chain_one_pass_kernel(
        maps_ptr, offsets_ptr, x0_ptr, starts_ptr, final_ptr, n_chunks,
        R: tl.constexpr, RP: tl.constexpr, BACKWARD: tl.constexpr, N_STATIC: tl.constexpr,
    ):  # fmt: skip
        """Grid (B·H, r): all n steps of one row (also level 2 of the two-level chain, over group maps)."""
        bh = tl.program_id(0).to(tl.int64)
        i = tl.program_id(1)
        rows = tl.arange(0, RP)
        x = tl.load(x0_ptr + (bh * R + i) * R + rows, mask=rows < R, other=0.0)  # (RP,)
        for u in range(N_STATIC if N_STATIC > 0 else n_chunks):
            A, b, at, real = _step_map(maps_ptr, offsets_ptr, bh, n_chunks, i, u, R, RP, BACKWARD)
            tl.store(starts_ptr + at * R + rows, x, mask=rows < R)
            x = tl.sum(A * x[None, :], axis=1) + b
        tl.store(final_ptr + (bh * R + i) * R + rows, x, mask=rows < R)

    @triton.jit
    def _group_maps_kernel(
        maps_ptr, offsets_ptr, gmaps_ptr, goffsets_ptr, n_chunks, n_groups,
        R: tl.constexpr, RP: tl.constexpr, GROUP: tl.constexpr, BACKWARD: tl.constexpr,
    ):  # fmt: skip
        """Level 1, grid (groups, B·H, r): the composition A_{last}⋯A_{first} of a group's steps and
        its offset; steps past the end are the identity."""
        g = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        i = tl.program_id(2)
        rows = tl.arange(0, RP)
        eye = (rows[:, None] == rows[None, :]).to(tl.float32)
        P = eye  # (RP, RP)
        p = tl.zeros([RP], dtype=tl.float32)
        for j in range(GROUP):
            A, b, at, real = _step_map(maps_ptr, offsets_ptr, bh, n_chunks, i, g * GROUP + j, R, RP, BACKWARD)
            A = A + tl.where(real, 0.0, 1.0) * eye
            P = tl.sum(A[:, :, None] * P[None, :, :], axis=1)  # A P
            p = tl.sum(A * p[None, :], axis=1) + b
        gat = (bh * n_groups + g) * R + i
        inside = (rows[:, None] < R) & (rows[None, :] < R)
        tl.store(gmaps_ptr + gat * R * R + rows[:, None] * R + rows[None, :], P, mask=inside)
        tl.store(goffsets_ptr + gat * R + rows, p, mask=rows < R)

    @triton.jit
    def _group_fill_kernel(
        maps_ptr, offsets_ptr, gstarts_ptr, starts_ptr, n_chunks, n_groups,
        R: tl.constexpr, RP: tl.constexpr, GROUP: tl.constexpr, BACKWARD: tl.constexpr,
    ):  # fmt: skip
        """Level 3, grid (groups, B·H, r): a group's steps again from its start, storing every value."""
        g = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        i = tl.program_id(2)
        rows = tl.arange(0, RP)
        x = tl.load(gstarts_ptr + ((bh * n_groups + g) * R + i) * R + rows, mask=rows < R, other=0.0)
        for j in range(GROUP):
            A, b, at, real = _step_map(maps_ptr, offsets_ptr, bh, n_chunks, i, g * GROUP + j, R, RP, BACKWARD)
            tl.store(starts_ptr + at * R + rows, x, mask=(rows < R) & real)
            x = tl.sum(A * x[None, :], axis=1) + b


def use_two_levels(n_chunks: int, r: int) -> bool:
    """DELTAMEM_CHAIN_GROUPS: `auto` (default) two levels from TWO_LEVEL_FROM chunks, `1` always, `0`
    never; one pass for r > TWO_LEVEL_MAX_RANK whatever the setting."""
    mode = kernel_choice.setting("chain")  # kernels.chain, or DELTAMEM_CHAIN_GROUPS
    if r > TWO_LEVEL_MAX_RANK:
        return False
    return mode == "1" or (mode == "auto" and n_chunks >= TWO_LEVEL_FROM)


def group_size(n_chunks: int) -> int:
    """S = 2^⌊log2(n)/2⌋ (at least 2), a power of two within a factor √2 of √n, so the serial depth
    S + n/S + S is near its minimum."""
    return 1 << max(1, (max(n_chunks, 1).bit_length() - 1) // 2)


def chain(maps: Tensor, offsets: Tensor, x0: Tensor, starts: Tensor, backward: bool) -> Tensor:
    """Run the chain; fills `starts` and returns the final value.

    maps: (B, H, n, r, r, r) — chunk n's r×r map of every row; offsets: (B, H, n, r, r) — its
    offset of every row; x0: (B, H, r, r) — every row's value before the first step; starts:
    (B, H, n, r, r) — written with every row's value at each chunk (its start going forward, its
    end going backward). Returns (B, H, r, r), the value after the last step. All fp32, contiguous.
    """
    B, H, n, r = maps.shape[:4]
    rp = 1 << max(0, r - 1).bit_length()
    final = torch.empty_like(x0)
    if not use_two_levels(n, r):
        _chain_one_pass_kernel[(B * H, r)](
            maps, offsets, x0, starts, final, n, R=r, RP=rp, BACKWARD=backward, N_STATIC=_n_static(n), num_warps=1
        )
        return final
    S = group_size(n)
    G = -(-n // S)
    gmaps = torch.empty(B, H, G, r, r, r, dtype=torch.float32, device=maps.device)
    goffsets = torch.empty(B, H, G, r, r, dtype=torch.float32, device=maps.device)
    gstarts = torch.empty_like(goffsets)
    per_group = dict(R=r, RP=rp, GROUP=S, BACKWARD=backward, num_warps=1)
    _group_maps_kernel[(G, B * H, r)](maps, offsets, gmaps, goffsets, n, G, **per_group)
    # level 2 is the one-pass chain over the group maps (already composed in walking order)
    _chain_one_pass_kernel[(B * H, r)](
        gmaps, goffsets, x0, gstarts, final, G, R=r, RP=rp, BACKWARD=False, N_STATIC=_n_static(G), num_warps=1
    )
    _group_fill_kernel[(G, B * H, r)](maps, offsets, gstarts, starts, n, G, **per_group)
    return final


def chain_reference(maps: Tensor, offsets: Tensor, x0: Tensor, backward: bool) -> tuple[Tensor, Tensor]:
    """The same recurrence as a PyTorch loop over chunks: (starts, final), the test oracle."""
    n = maps.shape[2]
    x, starts = x0, [None] * n
    for u in range(n):
        chunk = n - 1 - u if backward else u
        A = maps[:, :, chunk]  # (B, H, r rows, r, r)
        if backward:
            A = A.transpose(-1, -2)
        starts[chunk] = x
        x = (A @ x[..., None]).squeeze(-1) + offsets[:, :, chunk]
    return torch.stack(starts, dim=2), x


__all__ = ["chain", "chain_reference", "group_size", "use_two_levels", "TWO_LEVEL_FROM", "TWO_LEVEL_MAX_RANK"]
