"""The fused gate/normalisation kernel (deltamem.kernels.activate) against its PyTorch reference.

Values and gradients of q̃, k̃, v, β (in pre and b_β) on awkward head counts and ranks, bf16
input, rows whose tanh has norm below ε, saturated inputs, and backward passes where only some
outputs carry a gradient. On CUDA when present, else through Triton's interpreter.
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:  # before the first import of a kernel module
    os.environ["TRITON_INTERPRET"] = "1"

from deltamem.kernels.activate import activate_fused, activate_reference  # noqa: E402
from deltamem.kernels.chunk_scan import triton_available  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
EPS = 1e-6
pytestmark = [
    pytest.mark.skipif(not triton_available(), reason="triton not installed (or no CUDA and no interpreter)"),
    # the interpreter evaluates both sides of tl.where: the unused side divides by a zero norm
    pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning"),
]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm()) if want.norm() > 0 else float(got.norm())


def compare(pre: torch.Tensor, bias: torch.Tensor, used=(0, 1, 2, 3), tol: float = 1e-5) -> None:
    """Fused vs the fp64 reference on the same values; a random upstream gradient on the outputs in `used`."""
    g = torch.Generator().manual_seed(1)
    pre_f, bias_f = pre.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    pre_r, bias_r = pre.double().requires_grad_(True), bias.double().requires_grad_(True)
    got, want = activate_fused(pre_f, bias_f, EPS), activate_reference(pre_r, bias_r, EPS)
    for a, b in zip(got, want):
        assert a.dtype == torch.float32 and a.shape == b.shape == pre.shape[:-3] + pre.shape[-2:]
        assert rel_err(a, b) <= tol
    weights = [torch.randn(want[0].shape, generator=g, dtype=torch.float64).to(DEVICE) for _ in range(4)]
    loss_got = sum((got[i].double() * weights[i]).sum() for i in used)
    loss_want = sum((want[i] * weights[i]).sum() for i in used)
    d_got = torch.autograd.grad(loss_got, (pre_f, bias_f))
    d_want = torch.autograd.grad(loss_want, (pre_r, bias_r), allow_unused=True, materialize_grads=True)
    assert d_got[0].dtype == pre.dtype and d_got[1].dtype == bias.dtype
    grad_tol = tol if pre.dtype == torch.float32 else 1e-2
    for a, b in zip(d_got, d_want):
        assert rel_err(a, b) <= grad_tol


def make(lead: tuple[int, ...], H: int, r: int, scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(*lead, 4, H, r, generator=g) * scale
    bias = torch.randn(H * r, generator=g) - 1.5
    return pre.to(DEVICE), bias.to(DEVICE)


@pytest.mark.parametrize("lead", [(1, 1), (2, 37), (70,)])
@pytest.mark.parametrize("H,r", [(1, 8), (4, 8), (3, 5), (1, 16)])
def test_matches_reference(lead: tuple[int, ...], H: int, r: int) -> None:
    compare(*make(lead, H, r, seed=H * r))


def test_bf16_input_gives_fp32_outputs_and_bf16_gradients() -> None:
    pre, bias = make((3, 20), 1, 8, seed=3)
    compare(pre.to(torch.bfloat16).float().to(torch.bfloat16), bias)


def test_rows_below_eps_and_saturated_inputs() -> None:
    """tanh(0) = 0 gives a zero row (norm < ε: divided by ε, gradient dq̃/ε); |a| = 40 saturates tanh."""
    pre, bias = make((2, 9), 2, 8, seed=4)
    pre[0, 1, 0] = 0.0  # q part of one token: every head's norm is 0
    pre[1, 2, 1, 1] = 1e-8  # k part of one head: norm far below ε
    pre[1, 3, 0] = 40.0 * torch.sign(pre[1, 3, 0])
    compare(pre, bias)


@pytest.mark.parametrize("used", [(0,), (1, 3), (2,), (0, 1)])
def test_outputs_without_gradient(used: tuple[int, ...]) -> None:
    """A read-only call uses q̃ alone; SSW's segment writes use k̃, v, β: the others get no gradient."""
    compare(*make((2, 11), 4, 8, seed=5), used=used)


def test_empty_input() -> None:
    pre, bias = make((0, 5), 1, 8)
    q, k, v, beta = activate_fused(pre, bias, EPS)
    assert q.shape == (0, 5, 1, 8) and beta.shape == (0, 5, 1, 8)
