"""The chunked Triton scan (deltamem.kernels.chunk_scan) against the reference loop.

Values and gradients (q, k, v, beta, initial_state) under one random upstream gradient, on awkward
lengths, padding, bf16 inputs and saturated gates. On CUDA when present, else on CPU through
Triton's interpreter (TRITON_INTERPRET=1 is set below, before triton is imported); skipped
without triton. The interpreter runs programs one by one, so CPU shapes stay small.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:  # must precede the first import of the kernel module (its @triton.jit reads it)
    os.environ["TRITON_INTERPRET"] = "1"

from deltamem import scan  # noqa: E402
from deltamem.kernels import chunk_scan  # noqa: E402
from deltamem.kernels.chunk_scan import scan_triton, triton_available  # noqa: E402
from deltamem.scan import delta_scan, scan_reference  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
TOL = 1e-4  # fp32 kernel against an fp64 oracle, relative (norm) error
C_FAST = 64  # the interpreter's cost is per op, so CPU tests mostly use the longest chunk


def _kernel_runnable() -> tuple[bool, str]:
    if not triton_available():
        return False, "triton not installed, or no CUDA device and TRITON_INTERPRET != 1"
    if not HAS_CUDA and type(chunk_scan._scan_fwd_kernel).__name__ != "InterpretedFunction":
        return False, "kernel module was imported before TRITON_INTERPRET=1 was set; no CUDA to run it"
    return True, ""


_RUNNABLE, _WHY = _kernel_runnable()
pytestmark = pytest.mark.skipif(not _RUNNABLE, reason=_WHY or "triton unavailable")


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ in fp64 (absolute when want is zero)."""
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm().clamp_min(1e-30)) if want.norm() > 0 else float(got.norm())


def make_inputs(B: int, T: int, H: int, r: int = 8, seed: int = 0, pad_frac: float = 0.2, device: str = DEVICE):
    """fp64 q, k (unit norm), v, beta in (0, 1), all (B, T, H, r); valid (B, T); state (B, H, r, r)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q = F.normalize(torch.tanh(rand(B, T, H, r)), dim=-1)
    k = F.normalize(torch.tanh(rand(B, T, H, r)), dim=-1)
    v = rand(B, T, H, r)
    beta = torch.sigmoid(rand(B, T, H, r) - 1.0)
    valid = torch.rand(B, T, generator=g) >= pad_frac
    state = rand(B, H, r, r) * 0.5
    return tuple(x.to(device) for x in (q, k, v, beta, valid, state))


@pytest.fixture(params=[False, True], ids=["rows", "chunks"])
def parallel(request) -> bool:
    """Both kernel families: one program per row walking the chunks, and chunks side by side."""
    return request.param


def check(q, k, v, beta, valid, state, *, parallel, chunk_size=C_FAST, tol=TOL, grad_tol=TOL, dtype=torch.float32):
    """scan_triton on inputs cast to `dtype` vs scan_reference in fp64 on the same (rounded) values.

    Returns the kernel's final state and its gradients (q, k, v, beta[, state])."""
    g = torch.Generator().manual_seed(1)
    leaves = [x.to(dtype).requires_grad_(True) for x in (q, k, v, beta)]
    s0 = None if state is None else state.float().requires_grad_(True)
    reads, final = scan_triton(*leaves, valid, s0, chunk_size=chunk_size, parallel=parallel)
    assert reads.dtype == final.dtype == torch.float32
    w_reads = torch.randn(reads.shape, generator=g, dtype=torch.float64).to(reads.device)
    w_final = torch.randn(final.shape, generator=g, dtype=torch.float64).to(reads.device)
    inputs = leaves + ([s0] if s0 is not None else [])
    grads = torch.autograd.grad((reads * w_reads.float()).sum() + (final * w_final.float()).sum(), inputs)

    ref_leaves = [x.detach().double().requires_grad_(True) for x in inputs]
    B, T = q.shape[:2]
    ref_valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if valid is None else valid
    keep = ref_valid[..., None, None]
    ref_in = [torch.where(keep, x, 0.0) for x in ref_leaves[:4]]
    ref_s0 = ref_leaves[4] if s0 is not None else torch.zeros_like(final, dtype=torch.float64)
    ref_reads, ref_final = scan_reference(*ref_in, ref_valid, ref_s0)
    ref_grads = torch.autograd.grad((ref_reads * w_reads).sum() + (ref_final * w_final).sum(), ref_leaves)

    assert rel_err(reads, ref_reads) <= tol
    assert rel_err(final, ref_final) <= tol
    for name, got, want, x in zip(["q", "k", "v", "beta", "state"], grads, ref_grads, inputs):
        assert got.dtype == x.dtype, name
        assert rel_err(got, want) <= grad_tol, name
    if valid is not None:
        assert torch.all(reads[~valid] == 0)
        for got in grads[:4]:
            assert torch.all(got[~valid] == 0)
    return final, grads


@pytest.mark.parametrize("H", [1, 3])
@pytest.mark.parametrize("T", [1, 7, 63, 64, 65, 200])
def test_matches_reference(parallel: bool, T: int, H: int) -> None:
    B = 2 if H == 1 else 1  # the interpreter's time grows with B·H·r programs
    check(*make_inputs(B, T, H, seed=10 * T + H), parallel=parallel)


def test_no_valid_no_state(parallel: bool) -> None:
    q, k, v, beta, _, _ = make_inputs(2, 65, 1, seed=2)
    check(q, k, v, beta, None, None, parallel=parallel)


def test_padding_masks_and_nan_at_padding(parallel: bool) -> None:
    """Rows: left padded, right padded, fully invalid, holes. NaN at padding never leaks."""
    B, T, H = 4, 40, 1
    q, k, v, beta, valid, state = make_inputs(B, T, H, seed=3, pad_frac=0.0)
    valid[0, :13] = False
    valid[1, 29:] = False
    valid[2] = False
    valid[3, ::3] = False
    nan_in = [torch.where(valid[..., None, None], x, float("nan")) for x in (q, k, v, beta)]
    final, grads = check(*nan_in, valid, state, parallel=parallel)  # the oracle sees zeros at padding, the kernel NaN
    assert torch.equal(final[2], state[2].float())  # the fully invalid row keeps its state
    assert all(torch.isfinite(g_).all() for g_ in grads)


def test_bf16_inputs(parallel: bool) -> None:
    """bf16 q, k, v, beta are computed in fp32; gradients come back in bf16 (hence their tolerance)."""
    check(*make_inputs(2, 70, 1, seed=4), dtype=torch.bfloat16, grad_tol=1e-2, parallel=parallel)


@pytest.mark.parametrize("pattern", ["all", "some"])
def test_saturated_gates(parallel: bool, pattern: str) -> None:
    """β = 1 exactly (1 − β floored before the log): state rows are overwritten, decays vanish."""
    q, k, v, beta, valid, state = make_inputs(1, 150, 1, seed=5)
    if pattern == "all":
        beta = torch.ones_like(beta)
    else:  # runs of saturated tokens between ordinary ones, also many in one chunk
        g = torch.Generator().manual_seed(6)
        hit = torch.rand(beta.shape, generator=g) < 0.3
        hit[:, 64:120] = True
        beta = torch.where(hit.to(beta.device), 1.0, beta)
    check(q, k, v, beta, valid, state, parallel=parallel)


@pytest.mark.parametrize("chunk_size", [16, 32])
def test_other_chunk_sizes(parallel: bool, chunk_size: int) -> None:
    check(*make_inputs(1, 77, 1, seed=7), chunk_size=chunk_size, parallel=parallel)


@pytest.mark.parametrize("r", [4, 16])
def test_other_ranks(parallel: bool, r: int) -> None:
    check(*make_inputs(1, 40, 1, r=r, seed=r), parallel=parallel)


def test_delta_scan_triton_equals_chunked() -> None:
    q, k, v, beta, valid, state = make_inputs(1, 40, 1, seed=8)  # the kernel's default C = 16: 3 chunks
    q, k, v, beta = (x.to(torch.bfloat16) for x in (q, k, v, beta))
    outs, grads = [], []
    for impl in ("triton", "chunked"):
        leaves = [x.detach().clone().requires_grad_(True) for x in (q, k, v, beta)] + [
            state.float().requires_grad_(True)
        ]
        reads, final = delta_scan(*leaves[:4], valid, leaves[4], impl=impl)
        assert reads.dtype == final.dtype == torch.float32
        outs.append((reads, final))
        grads.append(torch.autograd.grad(reads.square().sum() + final.sum(), leaves))
    for a, b in zip(outs[0], outs[1]):
        assert rel_err(a, b) <= TOL
    for name, a, b in zip(["q", "k", "v", "beta", "state"], *grads):
        assert rel_err(a, b) <= (1e-2 if a.dtype == torch.bfloat16 else TOL), name


def test_auto_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: triton only for fp32 CUDA tensors, and DELTAMEM_TRITON_SCAN=0 turns it off."""
    assert not scan._use_triton(torch.zeros(1, 1, 1, 8))
    if HAS_CUDA:
        x = torch.zeros(1, 1, 1, 8, device="cuda")
        monkeypatch.delenv("DELTAMEM_TRITON_SCAN", raising=False)
        assert scan._use_triton(x) and not scan._use_triton(x.double())
        monkeypatch.setenv("DELTAMEM_TRITON_SCAN", "0")
        assert not scan._use_triton(x)


@pytest.mark.gpu
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
def test_gpu_long_sequences(parallel: bool, chunk_size: int) -> None:
    """B 4, T 2048, H 4 on CUDA (ragged lengths): values and gradients against the reference."""
    q, k, v, beta, valid, state = make_inputs(4, 2048, 4, seed=9, pad_frac=0.0, device="cuda")
    valid[1, :300] = False  # left padded
    valid[2, 1500:] = False  # right padded
    valid[3] = False
    check(q, k, v, beta, valid, state, chunk_size=chunk_size, parallel=parallel)


@pytest.mark.parametrize("H", [1, 2])
def test_two_level_chain_in_the_scan(monkeypatch: pytest.MonkeyPatch, H: int) -> None:
    """The chunk-parallel scan with its chain in two levels (forced; `auto` uses them from 128
    chunks): 10 chunks of 16 in groups of 2, with padding, against the reference."""
    monkeypatch.setenv("DELTAMEM_CHAIN_GROUPS", "1")
    check(*make_inputs(1, 150, H, seed=12), chunk_size=16, parallel=True)


@pytest.mark.gpu
@pytest.mark.parametrize("H", [1, 4])
def test_gpu_two_level_chain_long(monkeypatch: pytest.MonkeyPatch, H: int) -> None:
    """B 1, T 8192 (512 chunks of 16, where `auto` chains in two levels): values and gradients against
    the reference, and equal to the one-pass chain up to rounding."""
    inputs = make_inputs(1, 8192, H, seed=13, pad_frac=0.05, device="cuda")
    monkeypatch.delenv("DELTAMEM_CHAIN_GROUPS", raising=False)
    grouped = check(*inputs, chunk_size=16, parallel=True)
    monkeypatch.setenv("DELTAMEM_CHAIN_GROUPS", "0")
    one_pass = check(*inputs, chunk_size=16, parallel=True)
    assert rel_err(grouped[0], one_pass[0]) <= 1e-5
    for a, b in zip(grouped[1], one_pass[1]):
        assert rel_err(a, b) <= 1e-5


def test_parallel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` by default: chunks side by side on CUDA for fewer rows than SMs and ≥ 128 chunks; `1`
    forces chunks, `0` rows; anything else is refused."""
    cpu = torch.device("cpu")
    monkeypatch.delenv("DELTAMEM_SCAN_PARALLEL", raising=False)
    assert not chunk_scan.prefer_parallel(8, 512, cpu)
    if HAS_CUDA:
        assert chunk_scan.prefer_parallel(8, 512, torch.device("cuda"))
    monkeypatch.setenv("DELTAMEM_SCAN_PARALLEL", "0")
    assert not chunk_scan.prefer_parallel(8, 512, torch.device("cuda" if HAS_CUDA else "cpu"))
    monkeypatch.setenv("DELTAMEM_SCAN_PARALLEL", "1")
    assert chunk_scan.prefer_parallel(10_000, 1, cpu)
    monkeypatch.setenv("DELTAMEM_SCAN_PARALLEL", "auto")
    assert not chunk_scan.prefer_parallel(8, 512, cpu)
    if HAS_CUDA:
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        cuda = torch.device("cuda")
        assert chunk_scan.prefer_parallel(8, 512, cuda)
        assert not chunk_scan.prefer_parallel(sms, 512, cuda) and not chunk_scan.prefer_parallel(8, 127, cuda)
    monkeypatch.setenv("DELTAMEM_SCAN_PARALLEL", "yes")
    with pytest.raises(ValueError, match="DELTAMEM_SCAN_PARALLEL"):
        chunk_scan.prefer_parallel(8, 512, cpu)


def test_delta_scan_kernel_families_agree() -> None:
    """delta_scan's triton_rows and triton_chunks give the same reads, final state and gradients."""
    q, k, v, beta, valid, state = make_inputs(1, 70, 2, seed=11)
    outs = []
    for impl in ("triton_rows", "triton_chunks"):
        leaves = [x.float().requires_grad_(True) for x in (q, k, v, beta, state)]
        reads, final = delta_scan(*leaves[:4], valid, leaves[4], impl=impl)
        outs.append((reads, final, *torch.autograd.grad(reads.square().sum() + final.sum(), leaves)))
    for a, b in zip(*outs):
        assert rel_err(a, b) <= TOL
