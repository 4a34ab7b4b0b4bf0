"""The δ-mem scan (deltamem.scan) as a chunk-parallel Triton kernel, forward and backward.

Row i of a head's state evolves on its own with the head's keys (see deltamem.scan):

    s_t = a_t s_{t-1} − w_t k_t,   w_t = c_t (s_{t-1}·k_t) − u_t,   ρ_t = s_{t-1}·q_t,
    a = 1 − β_i, c = β_i, u = β_i v_i   (a = 1, c = u = 0 at invalid tokens).

One program per (batch, head, row) walks the sequence C tokens at a time and carries its row s
(r floats) across chunks. Inside a chunk, with D[t, j] = a_{j+1}⋯a_{t-1} (j < t; exponentiated
range sums of log a, taken as a matrix product so no difference of large cumsums cancels),
A = D ∘ (K Kᵀ) and L = diag(c) A strictly lower triangular:

    (I + L) w = c γ_prev (K s0) − u                      (γ_prev[t] = a_0⋯a_{t-1})
    ρ = γ_prev (Q s0) − (D ∘ Q Kᵀ) w,    s_end = γ_C s0 − Σ_j tail_j w_j k_j   (tail_j = a_{j+1}⋯a_{C-1})

The unit lower-triangular system is solved with matrix ops only: (I + L)⁻¹ = Π_k (I + (−L)^{2^k}),
log2 C factors, so x ← x + P x, P ← P P (doubling). The forward stores every chunk's start row.

Backward, chunks in reverse with λ = ∂loss/∂s_end carried: λ obeys the transposed recurrence
λ_{t-1} = a_t λ_t − c_t (λ_t·k_t) k_t + dρ_t q_t, so z_t = λ_t·k_t solves the *transposed* system
(I + Lᵀ) z = tail (K λ) + (D ∘ Q Kᵀ)ᵀ dρ with the same doubling. With the rows s_{t-1} (Sprev) and
λ_t (Λ) of the chunk as two (C, r) matrix products, the gradients are local:
    du = z, dc = −(s_{t-1}·k_t) z, da = Λ_t·Sprev_t, dq_t = dρ_t Sprev_t, dk_t = −w_t Λ_t − c_t z_t Sprev_t,
summed over the r rows with fp32 atomics for dq and dk (rounding may differ run to run, ~1e-7).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .. import kernel_choice
from .chunk_common import (  # noqa: F401 (triton, triton_available: re-exported)
    _chunk_backward,
    _chunk_forward,
    _chunk_setup,
    _n_static,
    triton,
    triton_available,
)
from .chunk_scan_parallel import backward_parallel, forward_parallel

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _scan_fwd_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        beta_ptr,
        valid_ptr,
        s0_ptr,
        reads_ptr,
        final_ptr,
        states_ptr,
        T,
        H,
        n_chunks,
        R: tl.constexpr,
        RP: tl.constexpr,
        C: tl.constexpr,
        LOG_C: tl.constexpr,
        HAS_VALID: tl.constexpr,
        N_STATIC: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        i = tl.program_id(2)  # state row
        cols = tl.arange(0, RP)
        row = ((b * H + h) * R + i) * R  # offset of S[b, h, i, 0]
        s = tl.load(s0_ptr + row + cols, mask=cols < R, other=0.0)  # (RP,) row state, fp32
        for n in range(N_STATIC if N_STATIC > 0 else n_chunks):  # N_STATIC: see _n_static
            tl.store(states_ptr + ((b * H + h) * n_chunks + n) * R * R + i * R + cols, s, mask=cols < R)
            t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C = _chunk_setup(
                k_ptr, q_ptr, beta_ptr, v_ptr, valid_ptr, b, h, n * C, T, H, i, R, RP, C, HAS_VALID
            )
            rho, w = _chunk_forward(K, Q, c, v, D, gam_prev, s, LOG_C)
            tl.store(reads_ptr + tok * R + i, tl.where(ok, rho, 0.0), mask=t < T)
            s = gam_C * s - tl.sum((tail * w)[:, None] * K, axis=0)
        tl.store(final_ptr + row + cols, s, mask=cols < R)

    @triton.jit
    def _scan_bwd_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        beta_ptr,
        valid_ptr,
        states_ptr,
        d_reads_ptr,
        d_final_ptr,
        dq_ptr,
        dk_ptr,
        dv_ptr,
        dbeta_ptr,
        ds0_ptr,
        T,
        H,
        n_chunks,
        R: tl.constexpr,
        RP: tl.constexpr,
        C: tl.constexpr,
        LOG_C: tl.constexpr,
        HAS_VALID: tl.constexpr,
        N_STATIC: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        i = tl.program_id(2)
        cols = tl.arange(0, RP)
        row = ((b * H + h) * R + i) * R
        lam = tl.load(d_final_ptr + row + cols, mask=cols < R, other=0.0)  # (RP,) ∂loss/∂(row at chunk end)
        for m in range(N_STATIC if N_STATIC > 0 else n_chunks):
            n = n_chunks - 1 - m
            s = tl.load(states_ptr + ((b * H + h) * n_chunks + n) * R * R + i * R + cols, mask=cols < R, other=0.0)
            t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C = _chunk_setup(
                k_ptr, q_ptr, beta_ptr, v_ptr, valid_ptr, b, h, n * C, T, H, i, R, RP, C, HAS_VALID
            )
            lam = _chunk_backward(
                d_reads_ptr, dq_ptr, dk_ptr, dv_ptr, dbeta_ptr,
                t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C, s, lam, T, i, R, RP, LOG_C,
            )  # fmt: skip
        tl.store(ds0_ptr + row + cols, lam, mask=cols < R)


# Warps per program by chunk length: fp32 tl.dot runs on FMAs and holds whole operand rows in
# registers; compiled for sm_90, C = 16 at 4 warps and C = 32 at 8 warps use ≤ 255 registers with
# no spills, while C = 64 spills at any warp count. Hence the default C = 16 (not yet timed on a GPU).
_NUM_WARPS = {16: 4, 32: 8, 64: 8}


def _plan(T: int, r: int, chunk_size: int) -> tuple[int, int, int, int]:
    """(C, log2 C, RP, n_chunks): C a power of two in [16, 64] (tl.dot needs ≥ 16), RP = r padded."""
    C = max(16, min(64, 1 << max(0, chunk_size - 1).bit_length(), 1 << max(0, T - 1).bit_length()))
    return C, C.bit_length() - 1, max(16, 1 << max(0, r - 1).bit_length()), max(1, -(-T // C))


def _launch_meta(C: int, log_c: int, r: int, rp: int, n: int, has_valid: bool) -> dict[str, int | bool]:
    """Keyword arguments shared by the forward and backward kernel launches."""
    return dict(R=r, RP=rp, C=C, LOG_C=log_c, HAS_VALID=has_valid, N_STATIC=_n_static(n), num_warps=_NUM_WARPS[C])


class _ScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        beta: Tensor,
        valid: Tensor | None,
        state: Tensor,
        chunk_size: int,
        parallel: bool,
    ) -> tuple[Tensor, Tensor]:
        B, T, H, r = k.shape
        C, log_c, rp, n = _plan(T, r, chunk_size)
        launch = _launch_meta(C, log_c, r, rp, n, valid is not None)  # compile-time constants of both kernels
        q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))  # (B, T, H, r), any float dtype
        valid_u8 = None if valid is None else valid.contiguous().view(torch.uint8)  # (B, T)
        s0 = state.detach().to(torch.float32).contiguous()  # (B, H, r, r)
        valid_arg = valid_u8 if valid_u8 is not None else s0  # a placeholder pointer when HAS_VALID is off
        maps = None
        if B * H * r == 0:
            reads = torch.zeros(B, T, H, r, dtype=torch.float32, device=k.device)
            final, states = s0.clone(), torch.empty(B, H, n, r, r, dtype=torch.float32, device=k.device)
        elif parallel:
            reads, final, states, maps = forward_parallel(q, k, v, beta, valid_arg, s0, launch, n)
        else:
            reads = torch.empty(B, T, H, r, dtype=torch.float32, device=k.device)
            final = torch.empty(B, H, r, r, dtype=torch.float32, device=k.device)
            states = torch.empty(B, H, n, r, r, dtype=torch.float32, device=k.device)  # row states at chunk starts
            _scan_fwd_kernel[(B, H, r)](q, k, v, beta, valid_arg, s0, reads, final, states, T, H, n, **launch)
        ctx.save_for_backward(q, k, v, beta, valid_u8, states, maps)
        ctx.launch, ctx.n, ctx.state_dtype = launch, n, state.dtype
        return reads, final

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_reads: Tensor, d_final: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, beta, valid_u8, states, maps = ctx.saved_tensors
        B, T, H, r = k.shape
        d_reads = d_reads.to(torch.float32).contiguous()  # (B, T, H, r)
        d_final = d_final.to(torch.float32).contiguous()  # (B, H, r, r)
        valid_arg = valid_u8 if valid_u8 is not None else d_final
        if B * H * r == 0:
            dq, dk, dv, dbeta = (torch.zeros(B, T, H, r, dtype=torch.float32, device=k.device) for _ in range(4))
            ds0 = d_final
        elif maps is not None:  # the forward ran the chunk-parallel kernels
            dq, dk, dv, dbeta, ds0 = backward_parallel(
                q, k, v, beta, valid_arg, states, maps, d_reads, d_final, ctx.launch, ctx.n
            )
        else:
            dq = torch.zeros(B, T, H, r, dtype=torch.float32, device=k.device)  # atomics accumulate over rows
            dk = torch.zeros_like(dq)
            dv, dbeta = torch.empty_like(dq), torch.empty_like(dq)
            ds0 = torch.empty(B, H, r, r, dtype=torch.float32, device=k.device)
            _scan_bwd_kernel[(B, H, r)](
                q, k, v, beta, valid_arg, states, d_reads, d_final, dq, dk, dv, dbeta, ds0, T, H, ctx.n, **ctx.launch
            )  # fmt: skip
        grads = (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbeta.to(beta.dtype))
        return *grads, None, ds0.to(ctx.state_dtype), None, None


def scan_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    valid: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 16,
    parallel: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """The δ-mem scan on the Triton kernels above, differentiable in q, k, v, beta and initial_state.

    q, k, v, beta: (B, T, H, r) any float dtype (computed in fp32); valid: (B, T) bool or None;
    initial_state: (B, H, r, r) or None (zeros). chunk_size: C, rounded to a power of two in [16, 64].
    parallel: run the chunks side by side (`chunk_scan_parallel`) instead of one program per row
    walking them; None decides by `prefer_parallel`.
    Returns reads (B, T, H, r) and final_state (B, H, r, r), both fp32; reads are 0 at invalid tokens,
    and whatever sits at invalid tokens (even NaN) is never read.
    """
    if triton is None:
        raise RuntimeError("scan_triton needs triton (pip install triton)")
    B, T, H, r = k.shape
    if not (q.shape == v.shape == beta.shape == k.shape):
        raise ValueError(
            f"q, k, v, beta must share one (B, T, H, r) shape, got {q.shape} {k.shape} {v.shape} {beta.shape}"
        )
    if valid is not None and valid.shape != (B, T):
        raise ValueError(f"valid must be ({B}, {T}), got {tuple(valid.shape)}")
    if initial_state is None:
        initial_state = torch.zeros(B, H, r, r, dtype=torch.float32, device=k.device)
    elif initial_state.shape != (B, H, r, r):
        raise ValueError(f"initial_state must be ({B}, {H}, {r}, {r}), got {tuple(initial_state.shape)}")
    valid = None if valid is None else valid.to(torch.bool)
    if parallel is None:
        parallel = prefer_parallel(B * H * r, _plan(T, r, chunk_size)[3], k.device)
    return _ScanTriton.apply(q, k, v, beta, valid, initial_state, chunk_size, parallel)


# Measured (benchmarks/RESULTS.md): at 1K tokens (64 chunks of 16) the row kernels' prefill was faster
# (H200, session 5: 98.8 vs 106.1 ms), at B 4 T 2K (128 chunks) the two were about equal, at 8K the
# chunk family won clearly (H100, session 6: prefill 212 vs 237 ms; training step 706 vs 788 ms).
PARALLEL_FROM_CHUNKS = 128


def prefer_parallel(rows: int, n_chunks: int, device: torch.device) -> bool:
    """Which kernel family `scan_triton(parallel=None)` runs, from DELTAMEM_SCAN_PARALLEL:

    * unset or `auto` — chunks side by side when the row programs alone would leave most of the GPU
      idle and there are many chunks to spread: fewer rows than streaming multiprocessors and at
      least PARALLEL_FROM_CHUNKS chunks (prefill and training writes of 2K+ tokens at small batch;
      below that the chunk family's three launches cost more than its parallelism saves);
    * `1` — chunks side by side, always;
    * `0` — one program per row walking the chunks, always.

    `auto` is the default since both families passed every GPU test on an H100 (session 6) and the
    chunk-parallel one was faster in every measured row (benchmarks/RESULTS.md)."""
    mode = kernel_choice.setting("scan_family")  # kernels.scan_family, or DELTAMEM_SCAN_PARALLEL
    if mode != "auto":
        return mode == "1"
    if device.type != "cuda":
        return False
    return rows < torch.cuda.get_device_properties(device).multi_processor_count and n_chunks >= PARALLEL_FROM_CHUNKS


__all__ = ["scan_triton", "triton_available"]
