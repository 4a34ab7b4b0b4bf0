"""The fused decode step (deltamem.kernels.decode_step) against its reference and the layer.

* reference vs `DeltaMemLayer` (always runs, CPU): same reads and state for one token.
* Triton kernel vs reference: on CUDA when present, else on CPU through Triton's interpreter
  (TRITON_INTERPRET=1 is set below, before triton is imported); skipped without triton.
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:  # must precede the first import of the kernel module (its @triton.jit reads it)
    os.environ["TRITON_INTERPRET"] = "1"

from deltamem.config import DeltaMemConfig  # noqa: E402
from deltamem.kernels import decode_step  # noqa: E402
from deltamem.kernels.decode_step import (  # noqa: E402
    memory_step_reference,
    memory_step_triton,
    triton_available,
)
from deltamem.layer import DeltaMemLayer  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
RANK = 8
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-4, torch.float16: 1e-4}


def _kernel_runnable() -> tuple[bool, str]:
    if not triton_available():
        return False, "triton not installed, or no CUDA device and TRITON_INTERPRET != 1"
    if not HAS_CUDA and type(decode_step._decode_step_kernel).__name__ != "InterpretedFunction":
        return False, "kernel module was imported before TRITON_INTERPRET=1 was set; no CUDA to run it"
    return True, ""


_RUNNABLE, _WHY = _kernel_runnable()
needs_triton = pytest.mark.skipif(not _RUNNABLE, reason=_WHY or "triton unavailable")


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got − want| / max |want| (absolute when want is all zero)."""
    scale = want.abs().max().clamp_min(1e-30) if want.abs().max() > 0 else 1.0
    return float((got.float() - want.float()).abs().max() / scale)


def make_inputs(B: int, d: int, H: int, r: int = RANK, dtype=torch.float32, device=DEVICE, seed=0):
    """Random x (B, d), in_proj (4D, d), beta_bias (D,), state (B, H, r, r), valid (B,)."""
    g = torch.Generator().manual_seed(seed)
    D = H * r
    x = torch.randn(B, d, generator=g)
    in_proj = torch.randn(4 * D, d, generator=g) / d**0.5  # pre-activations of order 1
    beta_bias = torch.randn(D, generator=g)
    state = torch.randn(B, H, r, r, generator=g)
    valid = torch.arange(B) % 3 != 1  # rows 1, 4, 7, ... are padding
    return (
        x.to(device, dtype),
        in_proj.to(device, dtype),
        beta_bias.to(device, dtype),
        state.to(device),
        valid.to(device),
    )


# --------------------------------------------------------------------------- reference vs layer
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("write", [True, False])
@pytest.mark.parametrize("d", [64, 100, 2560])
@pytest.mark.parametrize("B", [1, 3, 16])
@pytest.mark.parametrize("mode,H", [("tsw", 1), ("msw", 4)])
def test_reference_matches_layer(mode: str, H: int, B: int, d: int, write: bool, dtype: torch.dtype) -> None:
    x, in_proj, beta_bias, state, valid = make_inputs(B, d, H, dtype=dtype, device="cpu")
    # the fused step projects in fp32 whatever x's dtype, as compute_dtype=param does
    config = DeltaMemConfig(write=mode, num_state_heads=H, compute_dtype="param")
    layer = DeltaMemLayer(config, hidden_size=d, q_out=32, kv_out=16, layer_index=0)
    with torch.no_grad():
        layer.in_proj.copy_(in_proj.float())
        layer.beta_bias.copy_(beta_bias.float())
    layer.state = state.clone()
    with torch.no_grad():
        layer_reads = layer(x[:, None, :], valid[:, None], write=write)[:, 0]  # (B, D)
    before = state.clone()
    reads, new_state = memory_step_reference(x, in_proj, beta_bias, state, valid, write, H, RANK)
    assert torch.equal(state, before), "the reference must not modify its input state"
    assert reads.dtype == new_state.dtype == torch.float32
    assert reads.shape == (B, H * RANK) and new_state.shape == (B, H, RANK, RANK)
    assert rel_err(reads, layer_reads) <= 1e-5
    assert rel_err(new_state, layer.state) <= 1e-5
    assert torch.all(reads[~valid] == 0)
    assert torch.equal(new_state[~valid], state[~valid])
    if not write:
        assert torch.equal(new_state, state)


def test_reference_valid_none_is_all_valid() -> None:
    x, in_proj, beta_bias, state, _ = make_inputs(4, 64, 4, device="cpu")
    a = memory_step_reference(x, in_proj, beta_bias, state, None, True, 4, RANK)
    b = memory_step_reference(x, in_proj, beta_bias, state, torch.ones(4, dtype=torch.bool), True, 4, RANK)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


# --------------------------------------------------------------------------- kernel vs reference
_SHAPES = [(1, 64), (3, 64), (16, 64), (1, 100), (3, 100), (1, 2560)]
if HAS_CUDA:  # the interpreter runs programs one by one: big B only at small d, big d only at B = 1
    _SHAPES += [(16, 100), (3, 2560), (16, 2560)]


def check_kernel(x, in_proj, beta_bias, state, valid, write, H, r, tol) -> None:
    want_reads, want_state = memory_step_reference(x, in_proj, beta_bias, state, valid, write, H, r)
    got_state = state.clone()
    got_reads = memory_step_triton(x, in_proj, beta_bias, got_state, valid, write, H, r)
    assert got_reads.dtype == torch.float32 and got_reads.shape == want_reads.shape
    assert rel_err(got_reads, want_reads) <= tol
    assert rel_err(got_state, want_state) <= tol
    if valid is not None:
        assert torch.all(got_reads[~valid] == 0)
        assert torch.equal(got_state[~valid], state[~valid])
    if not write:
        assert torch.equal(got_state, state)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("write", [True, False])
@pytest.mark.parametrize("H", [1, 4])
@pytest.mark.parametrize("B,d", _SHAPES)
def test_triton_matches_reference(B: int, d: int, H: int, write: bool, dtype: torch.dtype) -> None:
    x, in_proj, beta_bias, state, valid = make_inputs(B, d, H, dtype=dtype)
    check_kernel(x, in_proj, beta_bias, state, valid, write, H, RANK, TOL[dtype])


@needs_triton
@pytest.mark.parametrize("r,H", [(1, 4), (2, 4), (4, 1), (16, 1), (16, 4)])
def test_triton_other_ranks(r: int, H: int) -> None:
    x, in_proj, beta_bias, state, valid = make_inputs(3, 100, H, r=r, seed=r)
    check_kernel(x, in_proj, beta_bias, state, valid, True, H, r, TOL[torch.float32])


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_low_precision_params_fp32_x(dtype: torch.dtype) -> None:
    """x fp32 with bf16/fp16 parameters: the kernel promotes to fp32 (no rounding of x)."""
    x, in_proj, beta_bias, state, valid = make_inputs(3, 100, 4)
    check_kernel(x, in_proj.to(dtype), beta_bias.to(dtype), state, valid, True, 4, RANK, TOL[dtype])


@needs_triton
@pytest.mark.parametrize("B,d,H,splits", [(3, 100, 4, 2), (3, 100, 1, 3), (2, 64, 4, 4), (1, 2560, 4, 5)])
@pytest.mark.parametrize("write", [True, False])
def test_triton_split_d(B: int, d: int, H: int, splits: int, write: bool) -> None:
    """d cut into slices across programs: partials summed by the last slice; counters reset."""
    x, in_proj, beta_bias, state, valid = make_inputs(B, d, H, dtype=torch.bfloat16, seed=splits)
    want_reads, want_state = memory_step_reference(x, in_proj, beta_bias, state, valid, write, H, RANK)
    for _ in range(2):  # a second call proves the arrival counters were left at zero
        got_state = state.clone()
        got_reads = memory_step_triton(x, in_proj, beta_bias, got_state, valid, write, H, RANK, num_splits=splits)
        assert rel_err(got_reads, want_reads) <= TOL[torch.bfloat16]
        assert rel_err(got_state, want_state) <= TOL[torch.bfloat16]
    assert int(decode_step._COUNTERS[x.device].abs().sum()) == 0


@needs_triton
def test_triton_strided_inputs_and_no_valid() -> None:
    """x as the last position of a (B, T, d) hidden state, in_proj a slice of a wider matrix."""
    x, in_proj, beta_bias, state, _ = make_inputs(3, 100, 4)
    hidden = torch.randn(3, 5, 100, device=DEVICE)
    hidden[:, -1] = x
    wide = torch.randn(in_proj.shape[0], 130, device=DEVICE)
    wide[:, 7:107] = in_proj
    check_kernel(hidden[:, -1], wide[:, 7:107], beta_bias, state, None, True, 4, RANK, TOL[torch.float32])


@needs_triton
def test_triton_decode_loop_matches_layer() -> None:
    """Five decode steps in place track the layer's own state carried across calls."""
    B, d, H = 3, 64, 4
    _, in_proj, beta_bias, state, valid = make_inputs(B, d, H)
    layer = DeltaMemLayer(
        DeltaMemConfig(write="msw", num_state_heads=H), hidden_size=d, q_out=32, kv_out=16, layer_index=0
    ).to(DEVICE)
    with torch.no_grad():
        layer.in_proj.copy_(in_proj)
        layer.beta_bias.copy_(beta_bias)
    layer.state = state.clone()
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        x = torch.randn(B, d, generator=g).to(DEVICE)
        step_valid = valid if step % 2 == 0 else torch.ones_like(valid)
        with torch.no_grad():
            want = layer(x[:, None, :], step_valid[:, None], write=True)[:, 0]
        got = memory_step_triton(x, in_proj, beta_bias, state, step_valid, True, H, RANK)
        assert rel_err(got, want) <= 1e-5
        assert rel_err(state, layer.state) <= 1e-5


@needs_triton
def test_triton_rejects_bad_state() -> None:
    x, in_proj, beta_bias, state, valid = make_inputs(3, 64, 1)
    with pytest.raises(ValueError, match="contiguous fp32"):
        memory_step_triton(x, in_proj, beta_bias, state.to(torch.bfloat16), valid, True, 1, RANK)
    with pytest.raises(ValueError, match="contiguous fp32"):
        memory_step_triton(x, in_proj, beta_bias, state.transpose(-1, -2), valid, True, 1, RANK)
