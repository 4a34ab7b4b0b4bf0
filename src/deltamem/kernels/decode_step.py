"""One δ-mem step for a single token per sequence ("decode"), fused into one Triton launch.

For each batch row b (METHOD.md §3), with D = H·r and in_proj = [A_q; A_k; A_v; W_β] (4D, d):

    p = in_proj x_b                          split into q, k, v, β-logit, each (H, r)
    q̃ = L2norm(tanh q), k̃ = L2norm(tanh k)  per head (F.normalize, eps 1e-6)
    β = sigmoid(β-logit + b_β)
    ρ = S q̃                                  read before write (0 for invalid rows)
    S ← diag(1−β) S + diag(β)(v − S k̃) k̃ᵀ    only when writing and the row is valid

`memory_step_reference` is the readable oracle; `memory_step_triton` runs the whole step
(GEMV, activations, read and in-place write) as one kernel launch on a grid (B, splits of d):
each program projects one row over one slice of d, and the last slice to finish for a row sums
the partials in a fixed order (deterministic) and does the rest of the step.
Both compute in fp32 whatever the input dtypes: unlike `DeltaMemLayer.project`, x is *not*
rounded to the parameter dtype before the projection.
"""

from __future__ import annotations

import functools
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


# Launch heuristics (module-level so a benchmark can tune them).
_TILE_BUDGET = 4096  # elements per weight tile on GPU (4 tiles live at once); tuned on H100
_PROGRAMS_PER_SM = 2  # target number of programs per SM when splitting d
_NUM_WARPS = 4
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_COUNTERS: dict[torch.device, Tensor] = {}  # per-device arrival counters, always left at 0

if triton is not None:

    @triton.jit
    def _tanh(z):
        """tanh from exp only (the interpreter has no libdevice); odd Taylor series near 0."""
        a = tl.abs(z)
        t = tl.exp(-2.0 * a)
        big = (1.0 - t) / (1.0 + t)
        z2 = a * a  # |a| < 0.3: terms up to a^11, truncation < 1e-8 relative
        small = a * (
            1.0
            + z2
            * (-1.0 / 3.0 + z2 * (2.0 / 15.0 + z2 * (-17.0 / 315.0 + z2 * (62.0 / 2835.0 + z2 * (-1382.0 / 155925.0)))))
        )
        mag = tl.where(a < 0.3, small, big)
        return tl.where(z < 0, -mag, mag)

    @triton.jit
    def _finish(
        p_q,
        p_k,
        p_v,
        p_b,
        b,
        bias_ptr,
        stride_bias,
        state_ptr,
        valid_ptr,
        stride_valid,
        reads_ptr,
        H: tl.constexpr,
        R: tl.constexpr,
        HP: tl.constexpr,
        HAS_VALID: tl.constexpr,
        WRITE: tl.constexpr,
    ):
        """Steps 2-4 for row b, from its projections p_* (HP, R) fp32."""
        hh = tl.arange(0, HP)[:, None]  # (HP, 1)
        row = hh * R + tl.arange(0, R)[None, :]  # (HP, R) index h·r + i into D
        head_ok = hh < H
        ok3 = head_ok[:, :, None]
        # 2. q̃, k̃ unit per head (padded heads stay 0); β one gate per state row.
        q = _tanh(p_q)
        q = q / tl.maximum(tl.sqrt(tl.sum(q * q, axis=1)), 1e-6)[:, None]
        k = _tanh(p_k)
        k = k / tl.maximum(tl.sqrt(tl.sum(k * k, axis=1)), 1e-6)[:, None]
        bias = tl.load(bias_ptr + row * stride_bias, mask=head_ok, other=0.0).to(tl.float32)
        beta = tl.sigmoid(p_b + bias)  # (HP, R)
        # 3. read before write: ρ[h, i] = Σ_j S[h, i, j] q̃[h, j]; zero for invalid rows.
        if HAS_VALID:
            row_ok = tl.load(valid_ptr + b * stride_valid) != 0
        else:
            row_ok = b >= 0
        s_ptr = state_ptr + b * (H * R * R) + row[:, :, None] * R + tl.arange(0, R)[None, None, :]  # (HP, R, R)
        S = tl.load(s_ptr, mask=ok3, other=0.0)
        rho = tl.where(row_ok, tl.sum(S * q[:, None, :], axis=2), 0.0)  # (HP, R)
        tl.store(reads_ptr + b * (H * R) + row, rho, mask=head_ok)
        # 4. gated delta-rule write, in place, skipped for invalid rows.
        if WRITE:
            s_k = tl.sum(S * k[:, None, :], axis=2)  # (HP, R)
            S_new = (1.0 - beta)[:, :, None] * S + (beta * (p_v - s_k))[:, :, None] * k[:, None, :]
            tl.store(s_ptr, S_new, mask=ok3 & row_ok)

    @triton.jit
    def _decode_step_kernel(
        x_ptr,
        w_ptr,
        bias_ptr,
        state_ptr,
        valid_ptr,
        reads_ptr,
        part_ptr,
        count_ptr,
        stride_xb,
        stride_xd,
        stride_wr,
        stride_wd,
        stride_bias,
        stride_valid,
        d: tl.constexpr,
        H: tl.constexpr,
        R: tl.constexpr,
        HP: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCKS_PER_PROG: tl.constexpr,
        N_SPLIT: tl.constexpr,
        N_SPLIT_P: tl.constexpr,
        HAS_VALID: tl.constexpr,
        WRITE: tl.constexpr,
    ):
        """Program (b, s) projects row b over its slice s of d; the last slice to finish for a row
        sums the N_SPLIT partials in a fixed order and runs `_finish`. Tiles: (HP, R, BLOCK_D).

        d is a compile-time constant (one compile per hidden size): the interpreter cannot loop
        to a runtime bound under NumPy 2 (it converts the 1-element array with int()).
        """
        b = tl.program_id(0).to(tl.int64)
        s = tl.program_id(1)
        D: tl.constexpr = H * R
        hh = tl.arange(0, HP)[:, None]
        head_ok = hh < H  # (HP, 1): HP is H rounded up to a power of two
        row = hh * R + tl.arange(0, R)[None, :]  # (HP, R) row of p inside each of the 4 blocks
        row3 = row[:, :, None]  # (HP, R, 1)
        ok3 = head_ok[:, :, None]
        cols = tl.arange(0, BLOCK_D)[None, None, :]  # (1, 1, BLOCK_D)

        # 1. p = in_proj @ x_b over this slice of d: four (HP, R) fp32 accumulators.
        acc_q = tl.zeros((HP, R), dtype=tl.float32)
        acc_k = tl.zeros((HP, R), dtype=tl.float32)
        acc_v = tl.zeros((HP, R), dtype=tl.float32)
        acc_b = tl.zeros((HP, R), dtype=tl.float32)
        for blk in range(BLOCKS_PER_PROG):
            c = (s * BLOCKS_PER_PROG + blk) * BLOCK_D + cols
            in_d = c < d
            xv = tl.load(x_ptr + b * stride_xb + c * stride_xd, mask=in_d, other=0.0).to(tl.float32)
            w = w_ptr + row3 * stride_wr + c * stride_wd  # (HP, R, BLOCK_D) pointers into A_q
            m = ok3 & in_d
            acc_q += tl.sum(tl.load(w, mask=m, other=0.0).to(tl.float32) * xv, axis=2)
            acc_k += tl.sum(tl.load(w + D * stride_wr, mask=m, other=0.0).to(tl.float32) * xv, axis=2)
            acc_v += tl.sum(tl.load(w + 2 * D * stride_wr, mask=m, other=0.0).to(tl.float32) * xv, axis=2)
            acc_b += tl.sum(tl.load(w + 3 * D * stride_wr, mask=m, other=0.0).to(tl.float32) * xv, axis=2)

        if N_SPLIT == 1:
            _finish(
                acc_q,
                acc_k,
                acc_v,
                acc_b,
                b,
                bias_ptr,
                stride_bias,
                state_ptr,
                valid_ptr,
                stride_valid,
                reads_ptr,
                H,
                R,
                HP,
                HAS_VALID,
                WRITE,
            )
        else:
            # Partials to part[b, s, 4, D]; the CTA barrier + acq_rel ticket publish them (the
            # CUTLASS split-K semaphore pattern), and the last arrival resets the counter to 0.
            part = part_ptr + (b * N_SPLIT + s) * (4 * D) + row
            tl.store(part, acc_q, mask=head_ok)
            tl.store(part + D, acc_k, mask=head_ok)
            tl.store(part + 2 * D, acc_v, mask=head_ok)
            tl.store(part + 3 * D, acc_b, mask=head_ok)
            tl.debug_barrier()
            ticket = tl.atomic_add(count_ptr + b, 1, sem="acq_rel", scope="gpu")
            if ticket == N_SPLIT - 1:
                sp = tl.arange(0, N_SPLIT_P)[:, None, None]  # (N_SPLIT_P, 1, 1)
                src = part_ptr + (b * N_SPLIT + sp) * (4 * D) + row[None, :, :]
                m = (sp < N_SPLIT) & head_ok[None, :, :]
                p_q = tl.sum(tl.load(src, mask=m, other=0.0, cache_modifier=".cg"), axis=0)
                p_k = tl.sum(tl.load(src + D, mask=m, other=0.0, cache_modifier=".cg"), axis=0)
                p_v = tl.sum(tl.load(src + 2 * D, mask=m, other=0.0, cache_modifier=".cg"), axis=0)
                p_b = tl.sum(tl.load(src + 3 * D, mask=m, other=0.0, cache_modifier=".cg"), axis=0)
                tl.atomic_xchg(count_ptr + b, 0)
                _finish(
                    p_q,
                    p_k,
                    p_v,
                    p_b,
                    b,
                    bias_ptr,
                    stride_bias,
                    state_ptr,
                    valid_ptr,
                    stride_valid,
                    reads_ptr,
                    H,
                    R,
                    HP,
                    HAS_VALID,
                    WRITE,
                )


def memory_step_triton(
    x: Tensor,
    in_proj: Tensor,
    beta_bias: Tensor,
    state: Tensor,
    valid: Tensor | None,
    write: bool,
    heads: int,
    rank: int,
    *,
    num_splits: int | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fused decode step: one kernel launch, state updated in place.

    x: (B, d) fp32/bf16/fp16, any strides; in_proj: (4D, d); beta_bias: (D,);
    state: (B, H, r, r) contiguous fp32, overwritten with the new state when `write`;
    valid: (B,) bool or None. r must be a power of two. Returns reads (B, D), computed in fp32
    and stored as `out_dtype` (the backbone's dtype saves a cast launch per layer).
    num_splits: slices of d per row (grid B × num_splits); None picks one from the SM count
    (always 1 under the interpreter). Results do not depend on it beyond fp32 rounding.
    Not safe to run concurrently on two streams of one device (shared arrival counters).
    """
    if triton is None:
        raise RuntimeError("memory_step_triton needs triton (pip install triton)")
    B, d = x.shape
    D = heads * rank
    if rank < 1 or rank & (rank - 1):
        raise ValueError(f"rank must be a power of two, got {rank}")
    if in_proj.shape != (4 * D, d) or beta_bias.numel() != D:
        raise ValueError(f"in_proj {tuple(in_proj.shape)} / beta_bias {tuple(beta_bias.shape)} do not fit D={D}, d={d}")
    if state.shape != (B, heads, rank, rank) or state.dtype != torch.float32 or not state.is_contiguous():
        raise ValueError(
            f"state must be a contiguous fp32 ({B}, {heads}, {rank}, {rank}) tensor, "
            f"got {tuple(state.shape)} {state.dtype}"
        )
    reads = torch.empty(B, D, dtype=out_dtype, device=x.device)  # (B, D), no launch
    if B == 0:
        return reads
    if valid is not None:
        if valid.shape != (B,):
            raise ValueError(f"valid must be ({B},), got {tuple(valid.shape)}")
        valid = valid.view(torch.uint8) if valid.dtype == torch.bool else valid  # zero-copy
    bias = beta_bias if beta_bias.dim() == 1 else beta_bias.reshape(D)
    hp, block_d, per_prog, n_split, n_split_p = _plan(
        B, d, heads, rank, num_splits, x.device, _TILE_BUDGET, _PROGRAMS_PER_SM
    )
    counters = parts = reads  # placeholders, unused when n_split == 1
    if n_split > 1:
        counters = _COUNTERS.get(x.device)
        if counters is None or counters.numel() < B:
            counters = _COUNTERS[x.device] = torch.zeros(max(B, 256), dtype=torch.int32, device=x.device)
        parts = torch.empty(B * n_split * 4 * D, dtype=torch.float32, device=x.device)  # (B, n_split, 4, D)
    sx, sw = x.stride(), in_proj.stride()
    _decode_step_kernel[(B, n_split)](
        x,
        in_proj,
        bias,
        state,
        valid if valid is not None else reads,
        reads,
        parts,
        counters,
        sx[0],
        sx[1],
        sw[0],
        sw[1],
        bias.stride(0),
        valid.stride(0) if valid is not None else 0,
        d=d,
        H=heads,
        R=rank,
        HP=hp,
        BLOCK_D=block_d,
        BLOCKS_PER_PROG=per_prog,
        N_SPLIT=n_split,
        N_SPLIT_P=n_split_p,
        HAS_VALID=valid is not None,
        WRITE=bool(write),
        num_warps=_NUM_WARPS,
    )
    return reads


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@functools.lru_cache(maxsize=256)
def _plan(
    B: int,
    d: int,
    heads: int,
    rank: int,
    num_splits: int | None,
    device: torch.device,
    tile_budget: int,
    programs_per_sm: int,
) -> tuple[int, int, int, int, int]:
    """Launch shape, cached (triton's own helpers cost µs per call): returns
    (HP, BLOCK_D, BLOCKS_PER_PROG, N_SPLIT, N_SPLIT_P)."""
    hp = _pow2_at_least(heads)
    budget = 65536 if _INTERPRET else tile_budget  # the interpreter prefers big numpy tiles
    block_d = max(16, min(_pow2_at_least(d), budget // (hp * rank)))
    if num_splits is not None and num_splits > 1:  # small enough blocks for the split asked for
        block_d = max(16, min(block_d, 1 << (-(-d // num_splits)).bit_length() - 1))
    n_blocks = -(-d // block_d)
    if num_splits is None:
        if _INTERPRET or device.type != "cuda":
            num_splits = 1
        else:  # about programs_per_sm programs per SM; powers of two keep compiles few
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            num_splits = max(1, _pow2_at_least(programs_per_sm * sms) // _pow2_at_least(B))
    per_prog = -(-n_blocks // max(1, min(num_splits, n_blocks)))
    n_split = -(-n_blocks // per_prog)
    return hp, block_d, per_prog, n_split, _pow2_at_least(n_split)


__all__ = ["memory_step_reference", "memory_step_triton", "triton_available"]
