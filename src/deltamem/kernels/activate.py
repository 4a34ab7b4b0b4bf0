"""The memory's gates and key normalisation in one kernel per direction.

From the stacked projection pre = [A_q x, A_k x, A_v x, W_β x] of every token (METHOD.md §3):

    q̃ = tanh(a_q) / max(‖tanh(a_q)‖, ε),  k̃ likewise (per state head),  v = a_v,  β = σ(a_β + b_β)

`activate_reference` is these lines in PyTorch: the CPU path and the oracle. In eager PyTorch they
are about a dozen elementwise launches forward and more backward, on tensors of only B·T·4·H·r
values, so they cost launch time, not bandwidth; `activate_fused` does the forward in one Triton
launch and the backward in one more (plus a reduction for b_β's gradient). Backward of the
normalisation, with u = tanh(a) and n = ‖u‖: du = (dq̃ − q̃ (q̃·dq̃)) / n when n > ε, else dq̃ / ε
(the clamp passes no gradient), and da = du (1 − u²).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .. import kernel_choice
from .chunk_common import triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _tanh(x):
        """tanh from one exp, 1 − 2 / (e^{2x} + 1), which saturates cleanly; below |x| = 0.1, where
        that form cancels, its series x − x³/3 + 2x⁵/15 (next term < 6e-9)."""
        x2 = x * x
        series = x * (1.0 - x2 * (1.0 / 3.0 - x2 * (2.0 / 15.0)))
        return tl.where(tl.abs(x) < 0.1, series, 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0))

    @triton.jit
    def _token_block(
        n_tokens, H: tl.constexpr, R: tl.constexpr, HP: tl.constexpr, RP: tl.constexpr, BLOCK: tl.constexpr
    ):
        """Offsets of a block of tokens: into pre (BLOCK, HP, RP) for part 0, into a (N, H, r) output,
        into b_β (H, r), and the mask."""
        tok = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        h = tl.arange(0, HP)
        j = tl.arange(0, RP)
        inner = h[None, :, None] * R + j[None, None, :]  # (1, HP, RP)
        mask = (tok < n_tokens)[:, None, None] & (h < H)[None, :, None] & (j < R)[None, None, :]
        return tok[:, None, None] * (4 * H * R) + inner, tok[:, None, None] * (H * R) + inner, inner, mask

    @triton.jit
    def _activate_fwd_kernel(
        pre_ptr, bias_ptr, q_ptr, k_ptr, v_ptr, beta_ptr, n_tokens, eps,
        H: tl.constexpr, R: tl.constexpr, HP: tl.constexpr, RP: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        at_pre, at_out, inner, mask = _token_block(n_tokens, H, R, HP, RP, BLOCK)
        D = H * R
        u_q = _tanh(tl.load(pre_ptr + at_pre, mask=mask, other=0.0).to(tl.float32))
        u_k = _tanh(tl.load(pre_ptr + at_pre + D, mask=mask, other=0.0).to(tl.float32))
        v = tl.load(pre_ptr + at_pre + 2 * D, mask=mask, other=0.0).to(tl.float32)
        z = tl.load(pre_ptr + at_pre + 3 * D, mask=mask, other=0.0).to(tl.float32)
        z += tl.load(bias_ptr + inner, mask=mask, other=0.0).to(tl.float32)
        n_q = tl.maximum(tl.sqrt(tl.sum(u_q * u_q, axis=2)), eps)  # (BLOCK, HP)
        n_k = tl.maximum(tl.sqrt(tl.sum(u_k * u_k, axis=2)), eps)
        tl.store(q_ptr + at_out, u_q / n_q[:, :, None], mask=mask)
        tl.store(k_ptr + at_out, u_k / n_k[:, :, None], mask=mask)
        tl.store(v_ptr + at_out, v, mask=mask)
        tl.store(beta_ptr + at_out, 1.0 / (1.0 + tl.exp(-z)), mask=mask)

    @triton.jit
    def _normalize_bwd(a, d_out, eps):
        """∂/∂a of tanh(a) / max(‖tanh(a)‖, ε) applied to d_out, along the last axis."""
        u = _tanh(a)
        norm = tl.sqrt(tl.sum(u * u, axis=2))[:, :, None]
        out = u / tl.maximum(norm, eps)
        du = tl.where(norm > eps, (d_out - out * tl.sum(out * d_out, axis=2)[:, :, None]) / norm, d_out / eps)
        return du * (1.0 - u * u)

    @triton.jit
    def _activate_bwd_kernel(
        pre_ptr, bias_ptr, dq_ptr, dk_ptr, dv_ptr, dbeta_ptr, dpre_ptr, dz_ptr, n_tokens, eps,
        H: tl.constexpr, R: tl.constexpr, HP: tl.constexpr, RP: tl.constexpr, BLOCK: tl.constexpr,
        HAS_DQ: tl.constexpr, HAS_DK: tl.constexpr, HAS_DV: tl.constexpr, HAS_DBETA: tl.constexpr,
    ):  # fmt: skip
        at_pre, at_out, inner, mask = _token_block(n_tokens, H, R, HP, RP, BLOCK)
        D = H * R
        out_ty = dpre_ptr.dtype.element_ty
        da_q = tl.zeros([BLOCK, HP, RP], dtype=tl.float32)
        da_k = tl.zeros([BLOCK, HP, RP], dtype=tl.float32)
        dv = tl.zeros([BLOCK, HP, RP], dtype=tl.float32)
        dz = tl.zeros([BLOCK, HP, RP], dtype=tl.float32)
        if HAS_DQ:
            a = tl.load(pre_ptr + at_pre, mask=mask, other=0.0).to(tl.float32)
            da_q = _normalize_bwd(a, tl.load(dq_ptr + at_out, mask=mask, other=0.0).to(tl.float32), eps)
        if HAS_DK:
            a = tl.load(pre_ptr + at_pre + D, mask=mask, other=0.0).to(tl.float32)
            da_k = _normalize_bwd(a, tl.load(dk_ptr + at_out, mask=mask, other=0.0).to(tl.float32), eps)
        if HAS_DV:
            dv = tl.load(dv_ptr + at_out, mask=mask, other=0.0).to(tl.float32)
        if HAS_DBETA:
            z = tl.load(pre_ptr + at_pre + 3 * D, mask=mask, other=0.0).to(tl.float32)
            beta = 1.0 / (1.0 + tl.exp(-(z + tl.load(bias_ptr + inner, mask=mask, other=0.0).to(tl.float32))))
            dz = tl.load(dbeta_ptr + at_out, mask=mask, other=0.0).to(tl.float32) * beta * (1.0 - beta)
        tl.store(dpre_ptr + at_pre, da_q.to(out_ty), mask=mask)
        tl.store(dpre_ptr + at_pre + D, da_k.to(out_ty), mask=mask)
        tl.store(dpre_ptr + at_pre + 2 * D, dv.to(out_ty), mask=mask)
        tl.store(dpre_ptr + at_pre + 3 * D, dz.to(out_ty), mask=mask)
        tl.store(dz_ptr + at_out, dz, mask=mask)


def activate_reference(pre: Tensor, beta_bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(..., 4, H, r) -> q̃, k̃, v, β, each (..., H, r); b_β: (H·r,)."""
    q, k, v, beta_logit = pre.unbind(-3)
    beta = torch.sigmoid(beta_logit + beta_bias.view(beta_logit.shape[-2:]))
    return F.normalize(torch.tanh(q), dim=-1, eps=eps), F.normalize(torch.tanh(k), dim=-1, eps=eps), v, beta


def fused_activate_available() -> bool:
    """Triton and a CUDA device are present, and the fused gates are chosen (`kernels.fused_activate`,
    or DELTAMEM_FUSED_ACTIVATE)."""
    return kernel_choice.enabled("fused_activate") and _triton_on_cuda()


@functools.lru_cache(maxsize=1)
def _triton_on_cuda() -> bool:
    return triton is not None and torch.cuda.is_available()


def _launch(n_tokens: int, H: int, r: int) -> tuple[tuple[int], dict[str, int]]:
    HP, RP = (1 << max(0, x - 1).bit_length() for x in (H, r))
    block = max(1, min(64, 1024 // (HP * RP)))  # about 1,024 values per program
    return (-(-n_tokens // block),), dict(H=H, R=r, HP=HP, RP=RP, BLOCK=block)


class _FusedActivate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, pre: Tensor, beta_bias: Tensor, eps: float) -> tuple[Tensor, ...]:
        *lead, _, H, r = pre.shape
        flat = pre.reshape(-1, 4, H, r).contiguous()  # (N, 4, H, r)
        outs = [torch.empty(flat.shape[0], H, r, dtype=torch.float32, device=pre.device) for _ in range(4)]
        if flat.shape[0]:
            grid, meta = _launch(flat.shape[0], H, r)
            _activate_fwd_kernel[grid](flat, beta_bias.contiguous(), *outs, flat.shape[0], eps, **meta)
        ctx.save_for_backward(flat, beta_bias)
        ctx.eps, ctx.shape = eps, pre.shape
        return tuple(o.view(*lead, H, r) for o in outs)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        flat, beta_bias = ctx.saved_tensors
        N, _, H, r = flat.shape
        d_pre = torch.empty_like(flat)
        d_z = torch.empty(N, H, r, dtype=torch.float32, device=flat.device)
        given = [None if g is None else g.reshape(N, H, r).contiguous() for g in grads]
        if N:
            grid, meta = _launch(N, H, r)
            flags = dict(zip(("HAS_DQ", "HAS_DK", "HAS_DV", "HAS_DBETA"), (g is not None for g in given)))
            ptrs = [flat if g is None else g for g in given]  # a placeholder pointer where there is no gradient
            _activate_bwd_kernel[grid](flat, beta_bias.contiguous(), *ptrs, d_pre, d_z, N, ctx.eps, **meta, **flags)
        d_bias = d_z.sum(0).reshape(beta_bias.shape).to(beta_bias.dtype) if ctx.needs_input_grad[1] else None
        return d_pre.view(ctx.shape), d_bias, None


def activate_fused(pre: Tensor, beta_bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`activate_reference` in one Triton launch (fp32 outputs); differentiable in pre and b_β."""
    return _FusedActivate.apply(pre, beta_bias, eps)


__all__ = ["activate_reference", "activate_fused", "fused_activate_available"]
