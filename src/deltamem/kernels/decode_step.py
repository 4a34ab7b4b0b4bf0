"""One δ-mem step for a single token per sequence ("decode"), fused into one Triton launch.

For each batch row b (METHOD.md §3), with D = H·r and in_proj = [A_q; A_k; A_v; W_β] (4D, d):

    p = in_proj x_b                          split into q, k, v, β-logit, each (H, r)
    q̃ = L2norm(tanh q), k̃ = L2norm(tanh k)  per head (F.normalize, eps 1e-6)
    β = sigmoid(β-logit + b_β)
    ρ = S q̃                                  read before write (0 for invalid rows)
    S ← diag(1−β) S + diag(β)(v − S k̃) k̃ᵀ    only when writing and the row is valid

`memory_step_reference` is the readable oracle; `memory_step_triton` runs the whole step
(GEMV, activations, read and in-place write) as one kernel with one program per batch row.
Both compute in fp32 whatever the input dtypes: unlike `DeltaMemLayer.project`, x is *not*
rounded to the parameter dtype before the projection.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # triton is optional: the reference works without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None

_NORM_EPS = 1e-6  # same floor as deltamem.layer


def triton_available() -> bool:
    """True when triton imports and it can run: a CUDA device, or TRITON_INTERPRET=1 (CPU)."""
    if triton is None:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def memory_step_reference(
    x: Tensor,
    in_proj: Tensor,
    beta_bias: Tensor,
    state: Tensor,
    valid: Tensor | None,
    write: bool,
    heads: int,
    rank: int,
) -> tuple[Tensor, Tensor]:
    """Plain-PyTorch decode step (out of place).

    x: (B, d) any float dtype; in_proj: (4D, d); beta_bias: (D,); state: (B, H, r, r);
    valid: (B,) bool or None (all valid). Returns reads (B, D) fp32 and the new state
    (B, H, r, r) fp32; the input state is not modified.
    """
    B = x.shape[0]
    p = x.float() @ in_proj.float().t()  # (B, 4D)
    q, k, v, beta_logit = p.view(B, 4, heads, rank).unbind(1)  # each (B, H, r)
    q = F.normalize(torch.tanh(q), dim=-1, eps=_NORM_EPS)
    k = F.normalize(torch.tanh(k), dim=-1, eps=_NORM_EPS)
    beta = torch.sigmoid(beta_logit + beta_bias.float().view(heads, rank))  # (B, H, r)
    S = state.float()  # (B, H, r, r), rows = value dims, columns = key dims
    ok = torch.ones(B, dtype=torch.bool, device=x.device) if valid is None else valid.bool()
    reads = torch.einsum("bhij,bhj->bhi", S, q) * ok[:, None, None]  # (B, H, r)
    if write:
        s_k = torch.einsum("bhij,bhj->bhi", S, k)  # (B, H, r)
        written = (1 - beta)[..., None] * S + (beta * (v - s_k))[..., None] * k[..., None, :]
        new_state = torch.where(ok[:, None, None, None], written, S)
    else:
        new_state = S.clone()
    return reads.reshape(B, heads * rank), new_state


if triton is not None:

    @triton.jit
    def _tanh(z):
        """tanh from exp only (the interpreter has no libdevice); odd Taylor series near 0."""
        a = tl.abs(z)
        t = tl.exp(-2.0 * a)
        big = (1.0 - t) / (1.0 + t)
        z2 = a * a  # |a| < 0.3: terms up to a^11, truncation < 1e-8 relative
        small = a * (1.0 + z2 * (-1.0 / 3.0 + z2 * (2.0 / 15.0 + z2 * (-17.0 / 315.0
                     + z2 * (62.0 / 2835.0 + z2 * (-1382.0 / 155925.0))))))
        mag = tl.where(a < 0.3, small, big)
        return tl.where(z < 0, -mag, mag)

    @triton.jit
    def _decode_step_kernel(
        x_ptr, w_ptr, bias_ptr, state_ptr, valid_ptr, reads_ptr,
        stride_xb, stride_xd, stride_wr, stride_wd, stride_bias, stride_valid,
        d: tl.constexpr, H: tl.constexpr, R: tl.constexpr, HP: tl.constexpr, BLOCK_D: tl.constexpr,
        HAS_VALID: tl.constexpr, WRITE: tl.constexpr,
    ):
        """One program = one batch row b. Tiles are (HP heads, R rows, BLOCK_D columns of d).

        d is a compile-time constant (one compile per hidden size): the interpreter cannot loop
        to a runtime bound under NumPy 2 (it converts the 1-element array with int()).
        """
        b = tl.program_id(0).to(tl.int64)
        D: tl.constexpr = H * R
        hh = tl.arange(0, HP)[:, None]  # (HP, 1) head index
        ii = tl.arange(0, R)[None, :]  # (1, R) index within a head
        head_ok = hh < H  # (HP, 1): HP is H rounded up to a power of two
        row = hh * R + ii  # (HP, R) row of p inside each of the 4 blocks
        row3 = row[:, :, None]  # (HP, R, 1)
        ok3 = head_ok[:, :, None]
        cols = tl.arange(0, BLOCK_D)[None, None, :]  # (1, 1, BLOCK_D)

        # 1. p = in_proj @ x_b, four (HP, R) accumulators, fp32 whatever the input dtype.
        acc_q = tl.zeros((HP, R), dtype=tl.float32)
        acc_k = tl.zeros((HP, R), dtype=tl.float32)
        acc_v = tl.zeros((HP, R), dtype=tl.float32)
        acc_b = tl.zeros((HP, R), dtype=tl.float32)
        for start in range(0, d, BLOCK_D):
            c = start + cols
            in_d = c < d
            xv = tl.load(x_ptr + b * stride_xb + c * stride_xd, mask=in_d, other=0.0).to(tl.float32)
            w = w_ptr + row3 * stride_wr + c * stride_wd  # (HP, R, BLOCK_D) pointers into A_q
            m = ok3 & in_d
            acc_q += tl.sum(tl.load(w, mask=m, other=0.0).to(tl.float32) * xv, axis=2)
            acc_k += tl.sum(tl.load(w + D * stride_wr, mask=m, other=0.0).to(tl.float32) * xv, axis=2)
            acc_v += tl.sum(tl.load(w + 2 * D * stride_wr, mask=m, other=0.0).to(tl.float32) * xv, axis=2)
            acc_b += tl.sum(tl.load(w + 3 * D * stride_wr, mask=m, other=0.0).to(tl.float32) * xv, axis=2)

        # 2. activations: q̃, k̃ unit per head (padded heads stay 0), β one gate per state row.
        q = _tanh(acc_q)
        q = q / tl.maximum(tl.sqrt(tl.sum(q * q, axis=1)), 1e-6)[:, None]
        k = _tanh(acc_k)
        k = k / tl.maximum(tl.sqrt(tl.sum(k * k, axis=1)), 1e-6)[:, None]
        bias = tl.load(bias_ptr + row * stride_bias, mask=head_ok, other=0.0).to(tl.float32)
        beta = tl.sigmoid(acc_b + bias)  # (HP, R)

        # 3. read before write: ρ[h, i] = Σ_j S[h, i, j] q̃[h, j].
        if HAS_VALID:
            row_ok = tl.load(valid_ptr + b * stride_valid) != 0
        else:
            row_ok = b >= 0
        s_ptr = state_ptr + b * (H * R * R) + row3 * R + tl.arange(0, R)[None, None, :]  # (HP, R, R)
        S = tl.load(s_ptr, mask=ok3, other=0.0)
        rho = tl.sum(S * q[:, None, :], axis=2)  # (HP, R)
        rho = tl.where(row_ok, rho, 0.0)
        tl.store(reads_ptr + b * D + row, rho, mask=head_ok)

        # 4. gated delta-rule write, in place, skipped for invalid rows.
        if WRITE:
            s_k = tl.sum(S * k[:, None, :], axis=2)  # (HP, R)
            S_new = (1.0 - beta)[:, :, None] * S + (beta * (acc_v - s_k))[:, :, None] * k[:, None, :]
            tl.store(s_ptr, S_new, mask=ok3 & row_ok)


def memory_step_triton(
    x: Tensor,
    in_proj: Tensor,
    beta_bias: Tensor,
    state: Tensor,
    valid: Tensor | None,
    write: bool,
    heads: int,
    rank: int,
) -> Tensor:
    """Fused decode step: one kernel launch, state updated in place.

    x: (B, d) fp32/bf16/fp16, any strides; in_proj: (4D, d); beta_bias: (D,);
    state: (B, H, r, r) contiguous fp32, overwritten with the new state when `write`;
    valid: (B,) bool or None. r must be a power of two. Returns reads (B, D) fp32.
    """
    if triton is None:
        raise RuntimeError("memory_step_triton needs triton (pip install triton)")
    B, d = x.shape
    D = heads * rank
    if rank < 1 or rank & (rank - 1):
        raise ValueError(f"rank must be a power of two, got {rank}")
    if in_proj.shape != (4 * D, d) or beta_bias.numel() != D:
        raise ValueError(f"in_proj {tuple(in_proj.shape)} / beta_bias {tuple(beta_bias.shape)} do not fit "
                         f"D={D}, d={d}")
    if state.shape != (B, heads, rank, rank) or state.dtype != torch.float32 or not state.is_contiguous():
        raise ValueError(f"state must be a contiguous fp32 ({B}, {heads}, {rank}, {rank}) tensor, "
                         f"got {tuple(state.shape)} {state.dtype}")
    reads = torch.empty(B, D, dtype=torch.float32, device=x.device)  # (B, D), no launch
    if B == 0:
        return reads
    if valid is not None:
        if valid.shape != (B,):
            raise ValueError(f"valid must be ({B},), got {tuple(valid.shape)}")
        valid = valid.view(torch.uint8) if valid.dtype == torch.bool else valid  # zero-copy
    bias = beta_bias.reshape(D)
    hp = triton.next_power_of_2(heads)
    # Register budget on GPU: ~2K elements per weight tile; the interpreter prefers big numpy tiles.
    budget = 65536 if os.environ.get("TRITON_INTERPRET") == "1" else 2048
    block_d = max(16, min(triton.next_power_of_2(d), budget // (hp * rank)))
    _decode_step_kernel[(B,)](
        x, in_proj, bias, state, valid if valid is not None else reads, reads,
        x.stride(0), x.stride(1), in_proj.stride(0), in_proj.stride(1), bias.stride(0),
        valid.stride(0) if valid is not None else 0,
        d=d, H=heads, R=rank, HP=hp, BLOCK_D=block_d, HAS_VALID=valid is not None, WRITE=bool(write),
        num_warps=4,
    )
    return reads


__all__ = ["memory_step_reference", "memory_step_triton", "triton_available"]
