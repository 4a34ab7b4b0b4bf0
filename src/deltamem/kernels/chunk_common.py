"""Pieces shared by the Triton scan kernels: the optional triton import, the interpreter's
static loop bound, and the per-chunk algebra of one state row (load a chunk and its decays, solve
the unit lower-triangular system by doubling, a chunk's reads and writes, a chunk's gradients).

`chunk_scan` (one program per row walking its chunks) and `chunk_scan_parallel` (chunks side by
side, chained by `affine_chain`) both build on these; the derivation is in `chunk_scan`'s docstring.
Imported downward only: this module imports no other kernel module.
"""

from __future__ import annotations

import os

import torch

try:  # triton is optional: deltamem.scan's PyTorch forms work without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None


def triton_available() -> bool:
    """True when triton imports and it can run: a CUDA device, or TRITON_INTERPRET=1 (CPU)."""
    if triton is None:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def _n_static(n_chunks: int) -> int:
    """Chunk count as a compile-time constant under the interpreter, which converts a runtime loop
    bound with int() on a 1-element array (an error under NumPy 2); 0 (runtime bound) on GPU, so
    one compile serves every sequence length."""
    return n_chunks if os.environ.get("TRITON_INTERPRET") == "1" else 0


if triton is not None:

    @triton.jit
    def _chunk_setup(
        k_ptr,
        q_ptr,
        beta_ptr,
        v_ptr,
        valid_ptr,
        b,
        h,
        t0,
        T,
        H,
        i,
        R: tl.constexpr,
        RP: tl.constexpr,
        C: tl.constexpr,
        HAS_VALID: tl.constexpr,
    ):
        """Loads one chunk of one row and builds the decays; padding and invalid tokens load as 0."""
        tt = tl.arange(0, C)
        t = t0 + tt  # (C,) token index
        ok = t < T
        if HAS_VALID:
            ok = ok & (tl.load(valid_ptr + b * T + t, mask=ok, other=0) != 0)
        tok = (b * T + t) * H + h  # (C,) offset of (b, t, h) in units of R
        cols = tl.arange(0, RP)[None, :]
        m2 = ok[:, None] & (cols < R)
        K = tl.load(k_ptr + tok[:, None] * R + cols, mask=m2, other=0.0).to(tl.float32)  # (C, RP)
        Q = tl.load(q_ptr + tok[:, None] * R + cols, mask=m2, other=0.0).to(tl.float32)  # (C, RP)
        c = tl.load(beta_ptr + tok * R + i, mask=ok, other=0.0).to(tl.float32)  # (C,)
        v = tl.load(v_ptr + tok * R + i, mask=ok, other=0.0).to(tl.float32)  # (C,)
        log_a = tl.log(tl.maximum(1.0 - c, 1e-30))  # deltamem.scan._LOG_FLOOR: β = 1 gives decay ≈ 0
        lower = tt[:, None] > tt[None, :]  # (C, C) strictly lower: j < t
        X = tl.where(lower, log_a[:, None], 0.0)  # X[m, j] = log a_m for m > j
        D = tl.dot(lower.to(tl.float32), X, input_precision="ieee")  # Σ_{j<m<t} log a_m
        D = tl.where(lower, tl.exp(D), 0.0)  # (C, C) decay from just after j to just before t
        gam_prev = tl.exp(tl.sum(tl.where(lower, log_a[None, :], 0.0), axis=1))  # (C,) a_0⋯a_{t-1}
        tail = tl.exp(tl.sum(X, axis=0))  # (C,) a_{j+1}⋯a_{C-1}
        gam_C = tl.exp(tl.sum(log_a, axis=0))  # scalar a_0⋯a_{C-1}
        return t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C

    @triton.jit
    def _solve_unit_lower(N, x, y, LOG_C: tl.constexpr, BOTH: tl.constexpr):
        """x ← (I − N)⁻¹ x and (if BOTH) y ← (I − Nᵀ)⁻¹ y for strictly lower N (C, C) by doubling."""
        P = N
        for k in tl.static_range(LOG_C):
            x = x + tl.sum(P * x[None, :], axis=1)
            if BOTH:
                y = y + tl.sum(P * y[:, None], axis=0)
            if k < LOG_C - 1:
                P = tl.dot(P, P, input_precision="ieee")
        return x, y

    @triton.jit
    def _chunk_forward(K, Q, c, v, D, gam_prev, s, LOG_C: tl.constexpr):
        """One chunk of one row from its state s at the chunk start: reads ρ (C,) and the w (C,)
        with s_end = γ_C s − Kᵀ(tail ∘ w)."""
        A = D * tl.dot(K, tl.trans(K), input_precision="ieee")  # (C, C) D ∘ K Kᵀ
        QK = D * tl.dot(Q, tl.trans(K), input_precision="ieee")  # (C, C) D ∘ Q Kᵀ
        Ks = tl.sum(K * s[None, :], axis=1)  # (C,) k_t · s0
        w, _ = _solve_unit_lower(-c[:, None] * A, c * gam_prev * Ks - c * v, Ks, LOG_C, False)
        rho = gam_prev * tl.sum(Q * s[None, :], axis=1) - tl.sum(QK * w[None, :], axis=1)
        return rho, w

    @triton.jit
    def _chunk_backward(
        d_reads_ptr, dq_ptr, dk_ptr, dv_ptr, dbeta_ptr,
        t, ok, tok, K, Q, c, v, D, gam_prev, tail, gam_C, s, lam, T, i,
        R: tl.constexpr, RP: tl.constexpr, LOG_C: tl.constexpr,
    ):  # fmt: skip
        """Gradients of one chunk of one row, from its start state s and λ = ∂loss/∂(row at the chunk
        end): stores dβ and dv, adds dq and dk (atomics over rows); returns λ at the chunk start."""
        cols = tl.arange(0, RP)
        d_rho = tl.load(d_reads_ptr + tok * R + i, mask=ok, other=0.0)  # (C,) reads at invalid tokens are 0
        A = D * tl.dot(K, tl.trans(K), input_precision="ieee")
        QK = D * tl.dot(Q, tl.trans(K), input_precision="ieee")
        Ks = tl.sum(K * s[None, :], axis=1)
        rhs_z = tail * tl.sum(K * lam[None, :], axis=1) + tl.sum(QK * d_rho[:, None], axis=0)
        w, z = _solve_unit_lower(-c[:, None] * A, c * gam_prev * Ks - c * v, rhs_z, LOG_C, True)
        p = gam_prev * Ks - tl.sum(A * w[None, :], axis=1)  # (C,) s_{t-1} · k_t
        # rows s_{t-1} and λ_t of the chunk, (C, RP) each
        s_prev = gam_prev[:, None] * s[None, :] - tl.dot(D, w[:, None] * K, input_precision="ieee")
        E = d_rho[:, None] * Q - (c * z)[:, None] * K  # what token t injects into λ_{t-1}
        Lam = tail[:, None] * lam[None, :] + tl.dot(tl.trans(D), E, input_precision="ieee")
        da = tl.sum(Lam * s_prev, axis=1)
        d_beta = tl.where(ok, v * z - p * z - da, 0.0)  # c = β, a = 1 − β, u = β v
        tl.store(dbeta_ptr + tok * R + i, d_beta, mask=t < T)
        tl.store(dv_ptr + tok * R + i, c * z, mask=t < T)
        m2 = ok[:, None] & (cols[None, :] < R)
        off = tok[:, None] * R + cols[None, :]
        tl.atomic_add(dq_ptr + off, d_rho[:, None] * s_prev, mask=m2, sem="relaxed")
        tl.atomic_add(dk_ptr + off, -w[:, None] * Lam - (c * z)[:, None] * s_prev, mask=m2, sem="relaxed")
        return gam_C * lam + tl.sum(gam_prev[:, None] * E, axis=0)
