"""The δ-mem recurrence: read before write, gated delta rule with gates on state rows.

For every sequence, state head and token t (METHOD.md §3), with S ∈ R^{r×r}:

    ρ_t = S_{t-1} q_t                                                   (read)
    S_t = diag(1 − β_t) S_{t-1} + diag(β_t) (v_t − S_{t-1} k_t) k_tᵀ     (write)

Invalid (padding) tokens neither read (ρ_t = 0) nor write (S_t = S_{t-1}).

Three implementations share one public function, `delta_scan`:

* `reference` — a readable loop over tokens, the oracle for tests.
* `chunked` — the parallel form for training and prefill. Row i of S evolves on its own,

      s_t = s_{t-1} (a_t I − c_t k_t k_tᵀ) + u_t k_tᵀ,   a = 1 − β_i, c = β_i, u = β_i v_i,

  so within a chunk of C tokens, writing s_t = a_t s_{t-1} − w_t k_tᵀ, the scalars w solve a
  unit lower-triangular C×C system (the WY/UT trick of DeltaNet), reads are a masked
  C×C product, and the chunk maps its initial state affinely, s ↦ s P + Q. The chunk maps are
  chained by a parallel prefix scan (⌈log2(T/C)⌉ steps of tiny r×r products); all decays are
  ratios γ_t/γ_j ≤ 1 computed in log space, so no chunk can overflow.

* `triton` — the same chunked algebra as Triton kernels, in two families: `triton_rows`
  (deltamem.kernels.chunk_scan: a program per (sequence, head, state row) carries its row across
  the chunks) and `triton_chunks` (deltamem.kernels.chunk_scan_parallel: the chunks' affine maps
  built side by side, chained per row, then every chunk's reads or gradients side by side again).
  `triton` picks one by `chunk_scan.prefer_parallel` (DELTAMEM_SCAN_PARALLEL: `auto`, the default,
  runs chunks for few rows and many chunks; `1` chunks, `0` rows). `auto` picks `triton` for fp32 CUDA
  tensors when triton imports, unless DELTAMEM_TRITON_SCAN=0.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import torch
from torch import Tensor

from . import kernel_choice

ScanImpl = Literal["auto", "reference", "chunked", "triton", "triton_rows", "triton_chunks"]
_TRITON_FAMILY = {"triton": None, "triton_rows": False, "triton_chunks": True}  # impl -> `parallel`

_LOG_FLOOR = 1e-30  # 1 − β is floored here before the log: β → 1 in fp32 would give log 0.


def delta_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    valid: Tensor | None = None,
    initial_state: Tensor | None = None,
    *,
    impl: ScanImpl = "auto",
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Run the δ-mem recurrence over a sequence.

    Args:
        q, k: (B, T, H, r) read and write keys (unit norm per head in δ-mem).
        v: (B, T, H, r) values; beta: (B, T, H, r) write gates in (0, 1), one per state row.
        valid: (B, T) bool, False for padding. None means every token is valid.
        initial_state: (B, H, r, r) state before the first token (zeros if None).
        impl: `reference`, `chunked`, `triton` (`triton_rows` / `triton_chunks` force a kernel
            family), or `auto`: triton for fp32 CUDA tensors when triton imports and
            DELTAMEM_TRITON_SCAN != "0", else chunked for T > 1 and one step for T == 1.
        chunk_size: chunk length C of the chunked form (the triton kernel keeps its own, tuned C).

    Returns:
        reads: (B, T, H, r) ρ_t = S_{t-1} q_t, zero at invalid tokens.
        final_state: (B, H, r, r) S_T.
    Both are in fp32 (fp64 if the inputs are fp64).
    """
    B, T, H, r = k.shape
    dtype = torch.promote_types(k.dtype, torch.float32)
    q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
    if valid is not None:  # whatever sits at padding (even NaN from fully masked attention rows) must not leak
        keep = valid[..., None, None]
        q, k, v, beta = (torch.where(keep, x, 0.0) for x in (q, k, v, beta))
    if initial_state is None:
        initial_state = k.new_zeros(B, H, r, r)
    initial_state = initial_state.to(dtype)
    if impl == "auto":
        impl = "triton" if _use_triton(k) else "reference" if T <= 1 else "chunked"
    if valid is None and impl not in _TRITON_FAMILY:  # the kernels take None: no mask to load
        valid = torch.ones(B, T, dtype=torch.bool, device=k.device)
    with torch.autocast(k.device.type, enabled=False):  # the recurrence always runs in fp32 (or fp64)
        if impl == "reference":
            return scan_reference(q, k, v, beta, valid, initial_state)
        if impl == "chunked":
            return scan_chunked(q, k, v, beta, valid, initial_state, chunk_size=chunk_size)
        if impl in _TRITON_FAMILY:  # imported here: triton is optional and slow to import
            from deltamem.kernels.chunk_scan import scan_triton

            reads, final = scan_triton(q, k, v, beta, valid, initial_state, parallel=_TRITON_FAMILY[impl])
            return reads.to(dtype), final.to(dtype)  # computed in fp32 (fp64 inputs are not kept)
    raise ValueError(
        f"unknown scan impl {impl!r}; expected auto, reference, chunked, triton, triton_rows or triton_chunks"
    )


def _use_triton(k: Tensor) -> bool:
    """`auto` picks the Triton kernel for fp32 CUDA tensors, unless DELTAMEM_TRITON_SCAN=0."""
    if k.device.type != "cuda" or k.dtype != torch.float32 or not kernel_choice.enabled("triton_scan"):
        return False
    return importlib.util.find_spec("triton") is not None


def scan_reference(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, valid: Tensor, state: Tensor
) -> tuple[Tensor, Tensor]:
    """The recurrence exactly as written in METHOD.md §3, one token at a time."""
    reads = []
    for t in range(k.shape[1]):
        q_t, k_t, v_t, b_t = q[:, t], k[:, t], v[:, t], beta[:, t]  # (B, H, r)
        m_t = valid[:, t, None, None]  # (B, 1, 1)
        rho_t = torch.einsum("bhij,bhj->bhi", state, q_t)  # read before write
        s_k = torch.einsum("bhij,bhj->bhi", state, k_t)
        written = (1 - b_t)[..., None] * state + (b_t * (v_t - s_k))[..., None] * k_t[..., None, :]
        state = torch.where(m_t[..., None], written, state)
        reads.append(torch.where(m_t, rho_t, 0.0))
    return torch.stack(reads, dim=1), state


def scan_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    valid: Tensor,
    state: Tensor,
    *,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Chunk-parallel form of `scan_reference` (see the module docstring for the algebra)."""
    B, T, H, r = k.shape
    C = max(1, min(chunk_size, T))
    beta = beta * valid[..., None, None].to(beta.dtype)  # invalid: a = 1, c = u = 0
    pad = (-T) % C
    if pad:
        q, k, v, beta = (torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v, beta))
    n = (T + pad) // C

    def per_chunk(x: Tensor) -> Tensor:  # (B, T, H, r) -> (B, H, n, C, r)
        return x.reshape(B, n, C, H, r).permute(0, 3, 1, 2, 4)

    def per_row(x: Tensor) -> Tensor:  # (B, T, H, r) -> (B, H, R=r rows, n, C)
        return x.reshape(B, n, C, H, r).permute(0, 3, 4, 1, 2)

    kc, qc = per_chunk(k), per_chunk(q)  # keys are shared by the rows of a head
    b, vb = per_row(beta), per_row(beta * v)  # c_t and u_t of every row
    log_a = torch.log((1 - b).clamp_min(_LOG_FLOOR))
    g = log_a.cumsum(-1)  # log γ_t (inclusive, within chunk)
    g_prev = torch.nn.functional.pad(g[..., :-1], (1, 0))  # log γ_{t-1}

    strictly_lower = torch.ones(C, C, dtype=torch.bool, device=k.device).tril(-1)
    # decay[t, j] = γ_{t-1} / γ_j for j < t, else 0.   (B, H, R, n, C, C)
    decay = torch.exp((g_prev[..., :, None] - g[..., None, :]).masked_fill(~strictly_lower, float("-inf")))
    kk = kc @ kc.transpose(-1, -2)  # (B, H, n, C, C): k_t · k_j
    qk = qc @ kc.transpose(-1, -2)  # (B, H, n, C, C): q_t · k_j

    # (I + L) w = diag(c γ_prev) K s0ᵀ − u, with L[t, j] = c_t decay[t, j] (k_t · k_j).
    system = b[..., :, None] * decay * kk[:, :, None]
    system = system + torch.eye(C, dtype=k.dtype, device=k.device)
    rhs = torch.cat([(b * g_prev.exp())[..., None] * kc[:, :, None], vb[..., None]], dim=-1)
    solved = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    w_state, w_const = solved[..., :r], solved[..., r]  # w = w_state s0ᵀ − w_const

    # The chunk maps its initial row state affinely: s_end = s0 P + Q.
    tail = torch.exp(g[..., -1:] - g)  # γ_C / γ_j   (B, H, R, n, C)
    eye_r = torch.eye(r, dtype=k.dtype, device=k.device)
    P = g[..., -1].exp()[..., None, None] * eye_r - (w_state * tail[..., None]).transpose(-1, -2) @ kc[:, :, None]
    Q = ((tail * w_const)[..., None, :] @ kc[:, :, None]).squeeze(-2)  # (B, H, R, n, r)

    s_start, final = _chain_chunks(state, P, Q)  # (B, H, R, n, r), (B, H, R, r)

    w = (w_state @ s_start[..., None]).squeeze(-1) - w_const  # (B, H, R, n, C)
    from_start = torch.einsum("bhinr,bhncr->bhinc", s_start, qc)
    within = ((decay * qk[:, :, None]) @ w[..., None]).squeeze(-1)
    reads = g_prev.exp() * from_start - within  # (B, H, R, n, C)
    reads = reads.permute(0, 3, 4, 1, 2).reshape(B, n * C, H, r)[:, :T]
    return reads * valid[..., None, None].to(reads.dtype), final


def _chain_chunks(state: Tensor, P: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
    """Row states at every chunk start, given each chunk's affine map s ↦ s P_m + Q_m.

    state: (..., r) initial row states; P: (..., n, r, r); Q: (..., n, r).
    Composing maps is associative, (P1, Q1) then (P2, Q2) = (P1 P2, Q1 P2 + Q2), so all prefixes
    come from a Hillis–Steele scan in ⌈log2 n⌉ batched steps instead of n sequential ones.
    """
    n, r = P.shape[-3], P.shape[-1]
    offset = 1
    while offset < n:
        eye = torch.eye(r, dtype=P.dtype, device=P.device).expand(*P.shape[:-3], offset, r, r)
        P_before = torch.cat([eye, P[..., : n - offset, :, :]], dim=-3)
        Q_before = torch.cat([Q.new_zeros(*Q.shape[:-2], offset, r), Q[..., : n - offset, :]], dim=-2)
        P, Q = P_before @ P, (Q_before[..., None, :] @ P).squeeze(-2) + Q
        offset *= 2
    ends = (state[..., None, None, :] @ P).squeeze(-2) + Q  # state after each chunk
    starts = torch.cat([state[..., None, :], ends[..., :-1, :]], dim=-2)
    return starts, ends[..., -1, :]


def read_only(q: Tensor, state: Tensor, valid: Tensor | None = None) -> Tensor:
    """Reads against a fixed state (writes off, or SSW's in-call reads).

    q: (B, T, H, r); state: (B, H, r, r) -> reads (B, T, H, r), zero at invalid tokens.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        reads = torch.einsum("bhij,bthj->bthi", state.to(dtype), q.to(dtype))
    if valid is not None:
        reads = torch.where(valid[..., None, None], reads, 0.0)
    return reads


__all__ = ["delta_scan", "scan_reference", "scan_chunked", "read_only", "ScanImpl"]
