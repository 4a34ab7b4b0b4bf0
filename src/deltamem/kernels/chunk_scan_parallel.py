"""The δ-mem scan parallel over chunks as well as rows: three passes per direction.

`chunk_scan` gives each (sequence, head, state row) one program that walks its sequence chunk by
chunk. With few rows — prefill or a training write part at batch 1 has B·H·r = 8 (TSW) or 32 (MSW)
rows — a handful of programs run hundreds of chunks one after another. Here the chunks run side
by side, because a chunk maps its start row s affinely to its end row (see `chunk_scan`):

    w = W1 s + w0,  W1 = (I + diag(c) A)⁻¹ diag(c γ_prev) K,  w0 = −(I + diag(c) A)⁻¹ (c ∘ v)
    s_end = M s + m,  M = γ_C I − Kᵀ diag(tail) W1,  m = −Kᵀ (tail ∘ w0)

Forward: (1) every chunk builds its (M, m), in parallel; (2) the maps are chained,
s_{n+1} = M_n s_n + m_n, storing each chunk's start row (`affine_chain`: one program per row, or
two levels over groups of chunks for long sequences); (3) every chunk computes its reads from its
start row, in parallel.

Backward: the adjoint of the chunk map is λ_start = Mᵀ λ_end + μ, where μ = Qᵀ(γ_prev ∘ dρ) −
Kᵀ(γ_prev ∘ c ∘ z0) and z0 = (I + Aᵀ diag(c))⁻¹ (D ∘ Q Kᵀ)ᵀ dρ collects what the chunk's reads
feed back into its start row. (1) every chunk builds μ, in parallel; (2) `affine_chain` chains λ
backwards, storing each chunk's end λ; (3) every chunk computes its gradients from its
start row and end λ with `chunk_scan`'s per-chunk backward, in parallel.

Results equal `chunk_scan`'s up to fp32 rounding (the same per-chunk algebra, chained as maps).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .affine_chain import chain
from .chunk_common import triton

if triton is not None:
    import triton.language as tl

    from .chunk_common import _chunk_backward, _chunk_forward, _chunk_setup, _solve_unit_lower

    @triton.jit
    def _solve_unit_lower_rows(N, X, LOG_C: tl.constexpr):
        """X ← (I − N)⁻¹ X for strictly lower N (C, C) and a matrix X (C, RP), by doubling."""
        P = N
        for k in tl.static_range(LOG_C):
            X = X + tl.dot(P, X, input_precision="ieee")
            if k < LOG_C - 1:
                P = tl.dot(P, P, input_precision="ieee")
        return X

    @triton.jit
    def _this_chunk(
        q_ptr, k_ptr, v_ptr, beta_ptr, valid_ptr, T, H,
        R: tl.constexpr, RP: tl.constexpr, C: tl.constexpr, HAS_VALID: tl.constexpr,
    ):  # fmt: skip
        """The chunk of a (n_chunks, B·H, r) grid program: its chunk n, (b·H + h), state row i, and
        `_chunk_setup` of that chunk."""
        n = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        i = tl.program_id(2)
        t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C = _chunk_setup(
            k_ptr, q_ptr, beta_ptr, v_ptr, valid_ptr, bh // H, bh % H, n * C, T, H, i, R, RP, C, HAS_VALID
        )
        return n, bh, i, t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C

    @triton.jit
    def _chunk_map_kernel(
        q_ptr, k_ptr, v_ptr, beta_ptr, valid_ptr, maps_ptr, offsets_ptr, T, H, n_chunks,
        R: tl.constexpr, RP: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, HAS_VALID: tl.constexpr,
    ):  # fmt: skip
        """Pass 1 (grid n_chunks × B·H × r): the chunk's affine map of row i, M (r, r) and m (r,)."""
        n, bh, i, t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C = _this_chunk(
            q_ptr, k_ptr, v_ptr, beta_ptr, valid_ptr, T, H, R, RP, C, HAS_VALID
        )
        N = -c[:, None] * (D * tl.dot(K, tl.trans(K), input_precision="ieee"))  # −diag(c) A
        W1 = _solve_unit_lower_rows(N, (c * gam_prev)[:, None] * K, LOG_C)  # (C, RP)
        w0, _ = _solve_unit_lower(N, -c * v, c, LOG_C, False)  # (C,)
        rows = tl.arange(0, RP)
        eye = (rows[:, None] == rows[None, :]).to(tl.float32)
        M = gam_C * eye - tl.dot(tl.trans(tail[:, None] * K), W1, input_precision="ieee")  # (RP, RP)
        m = -tl.sum((tail * w0)[:, None] * K, axis=0)  # (RP,)
        at = (bh * n_chunks + n) * R + i  # (b, h, n, i)
        inside = (rows[:, None] < R) & (rows[None, :] < R)
        tl.store(maps_ptr + at * R * R + rows[:, None] * R + rows[None, :], M, mask=inside)
        tl.store(offsets_ptr + at * R + rows, m, mask=rows < R)

    @triton.jit
    def _chunk_reads_kernel(
        q_ptr, k_ptr, v_ptr, beta_ptr, valid_ptr, states_ptr, reads_ptr, T, H, n_chunks,
        R: tl.constexpr, RP: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, HAS_VALID: tl.constexpr,
    ):  # fmt: skip
        """Pass 3 (grid n_chunks × B·H × r): the chunk's reads from its start row."""
        n, bh, i, t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C = _this_chunk(
            q_ptr, k_ptr, v_ptr, beta_ptr, valid_ptr, T, H, R, RP, C, HAS_VALID
        )
        rows = tl.arange(0, RP)
        s = tl.load(states_ptr + ((bh * n_chunks + n) * R + i) * R + rows, mask=rows < R, other=0.0)
        rho, _ = _chunk_forward(K, Q, c, v, D, gam_prev, s, LOG_C)
        tl.store(reads_ptr + tok * R + i, tl.where(ok, rho, 0.0), mask=t < T)

    @triton.jit
    def _chunk_feedback_kernel(
        q_ptr, k_ptr, v_ptr, beta_ptr, valid_ptr, d_reads_ptr, feedback_ptr, T, H, n_chunks,
        R: tl.constexpr, RP: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, HAS_VALID: tl.constexpr,
    ):  # fmt: skip
        """Backward pass 1 (grid n_chunks × B·H × r): μ, what the chunk's reads add to λ at its start."""
        n, bh, i, t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C = _this_chunk(
            q_ptr, k_ptr, v_ptr, beta_ptr, valid_ptr, T, H, R, RP, C, HAS_VALID
        )
        d_rho = tl.load(d_reads_ptr + tok * R + i, mask=ok, other=0.0)  # (C,)
        N = -c[:, None] * (D * tl.dot(K, tl.trans(K), input_precision="ieee"))
        QK = D * tl.dot(Q, tl.trans(K), input_precision="ieee")
        _, z0 = _solve_unit_lower(N, c, tl.sum(QK * d_rho[:, None], axis=0), LOG_C, True)  # (C,)
        mu = tl.sum((gam_prev * d_rho)[:, None] * Q, axis=0) - tl.sum((gam_prev * c * z0)[:, None] * K, axis=0)
        rows = tl.arange(0, RP)
        tl.store(feedback_ptr + ((bh * n_chunks + n) * R + i) * R + rows, mu, mask=rows < R)

    @triton.jit
    def _chunk_grads_kernel(
        q_ptr, k_ptr, v_ptr, beta_ptr, valid_ptr, states_ptr, lam_ptr, d_reads_ptr,
        dq_ptr, dk_ptr, dv_ptr, dbeta_ptr, T, H, n_chunks,
        R: tl.constexpr, RP: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, HAS_VALID: tl.constexpr,
    ):  # fmt: skip
        """Backward pass 3 (grid n_chunks × B·H × r): the chunk's gradients from its start row and end λ."""
        n, bh, i, t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C = _this_chunk(
            q_ptr, k_ptr, v_ptr, beta_ptr, valid_ptr, T, H, R, RP, C, HAS_VALID
        )
        rows = tl.arange(0, RP)
        at = (bh * n_chunks + n) * R + i
        s = tl.load(states_ptr + at * R + rows, mask=rows < R, other=0.0)
        lam = tl.load(lam_ptr + at * R + rows, mask=rows < R, other=0.0)
        _chunk_backward(
            d_reads_ptr, dq_ptr, dk_ptr, dv_ptr, dbeta_ptr,
            t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C, s, lam, T, i, R, RP, LOG_C,
        )  # fmt: skip


def forward_parallel(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, valid: Tensor, s0: Tensor, launch: dict, n: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Reads (B, T, H, r), final state (B, H, r, r), chunk start rows (B, H, n, r, r) and chunk maps
    (B, H, n, r, r, r), all fp32. Inputs are contiguous; `valid` is a uint8 (B, T) or a placeholder
    when launch["HAS_VALID"] is False."""
    B, T, H, r = k.shape
    grid_chunks = (n, B * H, r)
    maps = torch.empty(B, H, n, r, r, r, dtype=torch.float32, device=k.device)
    offsets = torch.empty(B, H, n, r, r, dtype=torch.float32, device=k.device)
    states = torch.empty(B, H, n, r, r, dtype=torch.float32, device=k.device)
    reads = torch.empty(B, T, H, r, dtype=torch.float32, device=k.device)
    local = {key: launch[key] for key in ("R", "RP", "C", "LOG_C", "HAS_VALID", "num_warps")}
    _chunk_map_kernel[grid_chunks](q, k, v, beta, valid, maps, offsets, T, H, n, **local)
    final = chain(maps, offsets, s0, states, backward=False)
    _chunk_reads_kernel[grid_chunks](q, k, v, beta, valid, states, reads, T, H, n, **local)
    return reads, final, states, maps


def backward_parallel(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, valid: Tensor, states: Tensor, maps: Tensor,
    d_reads: Tensor, d_final: Tensor, launch: dict, n: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Gradients dq, dk, dv, dβ (B, T, H, r) and d initial state (B, H, r, r), fp32."""
    B, T, H, r = k.shape
    grid_chunks = (n, B * H, r)
    local = {key: launch[key] for key in ("R", "RP", "C", "LOG_C", "HAS_VALID", "num_warps")}
    feedback = torch.empty(B, H, n, r, r, dtype=torch.float32, device=k.device)
    lam_end = torch.empty_like(feedback)
    dq = torch.zeros(B, T, H, r, dtype=torch.float32, device=k.device)  # atomics accumulate over rows
    dk = torch.zeros_like(dq)
    dv, dbeta = torch.empty_like(dq), torch.empty_like(dq)
    _chunk_feedback_kernel[grid_chunks](q, k, v, beta, valid, d_reads, feedback, T, H, n, **local)
    ds0 = chain(maps, feedback, d_final, lam_end, backward=True)
    _chunk_grads_kernel[grid_chunks](
        q, k, v, beta, valid, states, lam_end, d_reads, dq, dk, dv, dbeta, T, H, n, **local
    )  # fmt: skip
    return dq, dk, dv, dbeta, ds0
