"""The chunked parallel scan equals the reference loop: values, gradients, padding, carried state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltamem.scan import delta_scan, read_only, scan_chunked, scan_reference

LENGTHS = [1, 7, 63, 64, 65, 500]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_inputs(B, T, H, r=8, dtype=torch.float32, device="cpu", seed=0, pad_frac=0.0, with_state=False):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q = F.normalize(torch.tanh(rand(B, T, H, r)), dim=-1)
    k = F.normalize(torch.tanh(rand(B, T, H, r)), dim=-1)
    v = rand(B, T, H, r)
    beta = torch.sigmoid(rand(B, T, H, r) - 1.5)
    valid = torch.rand(B, T, generator=g) >= pad_frac
    state = rand(B, H, r, r) * 0.5 if with_state else None
    cast = lambda x: None if x is None else x.to(device=device, dtype=dtype)  # noqa: E731
    return cast(q), cast(k), cast(v), cast(beta), valid.to(device), cast(state)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("H", [1, 4])
@pytest.mark.parametrize("T", LENGTHS)
def test_chunked_matches_reference_forward_and_grad(T, H, device):
    q, k, v, beta, valid, s0 = make_inputs(2, T, H, device=device, seed=T * 10 + H, pad_frac=0.2, with_state=True)
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v, beta, s0)]
    reads_ref, final_ref = delta_scan(*leaves[:4], valid, leaves[4], impl="reference")
    leaves2 = [x.clone().requires_grad_(True) for x in (q, k, v, beta, s0)]
    reads, final = delta_scan(*leaves2[:4], valid, leaves2[4], impl="chunked", chunk_size=64)
    assert reads.shape == (2, T, H, 8) and final.shape == (2, H, 8, 8)
    assert rel_err(reads, reads_ref) <= 1e-5
    assert rel_err(final, final_ref) <= 1e-5
    # one upstream gradient through both outputs
    g = torch.Generator().manual_seed(1)
    w_reads = torch.randn(reads.shape, generator=g).to(device)
    w_final = torch.randn(final.shape, generator=g).to(device)
    ((reads_ref * w_reads).sum() + (final_ref * w_final).sum()).backward()
    ((reads * w_reads).sum() + (final * w_final).sum()).backward()
    for name, a, b in zip("q k v beta s0".split(), leaves2, leaves):
        assert rel_err(a.grad, b.grad) <= 1e-5, name


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64, 128])
def test_chunk_size_does_not_change_results(chunk_size):
    q, k, v, beta, valid, s0 = make_inputs(3, 77, 2, dtype=torch.float64, seed=3, pad_frac=0.1, with_state=True)
    ref_reads, ref_final = scan_reference(q, k, v, beta, valid, s0)
    reads, final = scan_chunked(q, k, v, beta, valid, s0, chunk_size=chunk_size)
    assert rel_err(reads, ref_reads) < 1e-12
    assert rel_err(final, ref_final) < 1e-12


def test_bf16_inputs_are_computed_in_fp32():
    q, k, v, beta, valid, s0 = make_inputs(2, 130, 4, dtype=torch.bfloat16, seed=5, with_state=True)
    reads, final = delta_scan(q, k, v, beta, valid, s0, impl="chunked")
    assert reads.dtype == torch.float32 and final.dtype == torch.float32
    exact_reads, exact_final = scan_reference(*(x.double() for x in (q, k, v, beta)), valid, s0.double())
    assert rel_err(reads.double(), exact_reads) <= 1e-4
    assert rel_err(final.double(), exact_final) <= 1e-4


def test_one_pass_equals_two_chunks_with_state_carried():
    q, k, v, beta, valid, _ = make_inputs(2, 150, 4, seed=7, pad_frac=0.15)
    reads, final = delta_scan(q, k, v, beta, valid)
    r1, s1 = delta_scan(q[:, :61], k[:, :61], v[:, :61], beta[:, :61], valid[:, :61])
    r2, s2 = delta_scan(q[:, 61:], k[:, 61:], v[:, 61:], beta[:, 61:], valid[:, 61:], s1)
    assert rel_err(torch.cat([r1, r2], 1), reads) <= 1e-5
    assert rel_err(s2, final) <= 1e-5


def test_padding_neither_reads_nor_writes():
    q, k, v, beta, _, s0 = make_inputs(1, 40, 1, seed=9, with_state=True)
    valid = torch.ones(1, 40, dtype=torch.bool)
    valid[:, 10:20] = False
    reads, final = delta_scan(q, k, v, beta, valid, s0)
    assert torch.all(reads[:, 10:20] == 0)
    keep = valid[0]
    reads_dense, final_dense = delta_scan(q[:, keep], k[:, keep], v[:, keep], beta[:, keep], None, s0)
    assert rel_err(final, final_dense) <= 1e-5
    assert rel_err(reads[:, keep], reads_dense) <= 1e-5


def test_read_before_write_and_row_gates_on_one_step():
    """Hand-checked single step: ρ uses the old state; row i decays by (1-β_i)."""
    r = 2
    S = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    q = torch.tensor([[[[1.0, 0.0]]]])
    k = torch.tensor([[[[0.0, 1.0]]]])
    v = torch.tensor([[[[10.0, 20.0]]]])
    beta = torch.tensor([[[[0.5, 0.25]]]])
    reads, final = delta_scan(q, k, v, beta, None, S, impl="reference")
    assert torch.equal(reads[0, 0, 0], torch.tensor([1.0, 3.0]))  # S q with the old S
    # row 0: 0.5*[1,2] + 0.5*(10 - 2)*[0,1] = [0.5, 5.0]; row 1: 0.75*[3,4] + 0.25*(20 - 4)*[0,1] = [2.25, 7.0]
    assert torch.allclose(final[0, 0], torch.tensor([[0.5, 5.0], [2.25, 7.0]]))
    steps = [x.expand(1, 3, 1, r) for x in (q, k, v, beta)]  # the same token three times
    chunked_reads, chunked_final = delta_scan(*steps, None, S, impl="chunked")
    ref_reads, ref_final = delta_scan(*steps, None, S, impl="reference")
    assert torch.allclose(chunked_final, ref_final, atol=1e-6)
    assert torch.allclose(chunked_reads, ref_reads, atol=1e-6)


def test_saturated_gates_stay_finite():
    q, k, v, _, valid, s0 = make_inputs(1, 70, 1, seed=11, with_state=True)
    beta = torch.ones_like(v)  # β = 1 exactly: (1 − β) = 0, log would be −inf without the floor
    beta[:, ::3] = 0.0
    reads, final = delta_scan(q, k, v, beta, valid, s0, impl="chunked")
    ref_reads, ref_final = delta_scan(q, k, v, beta, valid, s0, impl="reference")
    assert torch.isfinite(reads).all() and torch.isfinite(final).all()
    assert rel_err(final, ref_final) <= 1e-5 and rel_err(reads, ref_reads) <= 1e-5


def test_read_only_uses_fixed_state():
    q, _, _, _, valid, s0 = make_inputs(2, 9, 4, seed=13, pad_frac=0.3, with_state=True)
    reads = read_only(q, s0, valid)
    expected = torch.einsum("bhij,bthj->bthi", s0, q) * valid[..., None, None]
    assert torch.allclose(reads, expected)


def test_unknown_impl_is_an_error():
    q, k, v, beta, valid, _ = make_inputs(1, 3, 1)
    with pytest.raises(ValueError, match="unknown scan impl"):
        delta_scan(q, k, v, beta, valid, impl="fast")


def test_nan_at_padding_does_not_leak():
    """Fully masked attention rows can hand NaN hidden states to padded positions."""
    q, k, v, beta, _, s0 = make_inputs(2, 70, 4, seed=15, with_state=True)
    valid = torch.ones(2, 70, dtype=torch.bool)
    valid[1, :9] = False
    poisoned = [x.clone() for x in (q, k, v, beta)]
    for x in poisoned:
        x[1, :9] = float("nan")
    for impl in ("reference", "chunked"):
        clean_reads, clean_final = delta_scan(q, k, v, beta, valid, s0, impl=impl)
        reads, final = delta_scan(*poisoned, valid, s0, impl=impl)
        assert torch.isfinite(reads).all() and torch.isfinite(final).all()
        assert torch.equal(reads, clean_reads) and torch.equal(final, clean_final)
    assert torch.isfinite(read_only(poisoned[0], s0, valid)).all()
