"""One layer of δ-mem: projections, gates, read/write and the low-rank corrections.

`DeltaMemLayer` lives inside a wrapped attention module (as `self_attn.delta_mem`). Before the
attention runs, it turns the attention input x (the normalised hidden state that feeds q/k/v)
into reads ρ and updates its state; `CorrectedLinear` wrappers around q_proj / o_proj (and
optionally k_proj / v_proj) then add s·B ρ to their outputs. Reading order (METHOD.md §3):

    q̃ = L2norm(tanh(A_q x)), k̃ = L2norm(tanh(A_k x))    per state head
    v = A_v x,  β = sigmoid(W_β x + b_β)                  one gate per state row
    ρ_t = S_{t-1} q̃_t;  S_t = diag(1−β) S_{t-1} + diag(β)(v − S_{t-1} k̃) k̃ᵀ
    q = W_q x + s B_q ρ  (before q-norm / RoPE);  o = W_o attn + s B_o ρ  (after o_proj)
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernel_choice
from .config import DeltaMemConfig
from .kernels.activate import activate_fused, activate_reference, fused_activate_available
from .scan import read_only

_NORM_EPS = 1e-6  # floor of the per-head L2 norm of q̃ and k̃
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def decode_kernel_available() -> bool:
    """The fused Triton decode step can run (triton installed, CUDA present) and is chosen
    (`kernels.fused_decode`, or DELTAMEM_FUSED_DECODE; the PyTorch path is the reference)."""
    return kernel_choice.enabled("fused_decode") and _decode_kernel_importable()


@functools.lru_cache(maxsize=1)
def _decode_kernel_importable() -> bool:
    if not torch.cuda.is_available():
        return False
    from .kernels.decode_step import triton_available

    return triton_available()


class StateBatchError(ValueError):
    """The stored state holds a different number of sequences than the current batch."""


class DeltaMemLayer(nn.Module):
    """Parameters and state of the memory of one attention layer.

    Parameters (D = H·r, d = hidden size):
        in_proj: (4D, d) — rows [A_q; A_k; A_v; W_β] stacked so x is projected in one GEMM.
        beta_bias: (D,) — b_β.
        B_q: (q_out, D), B_o: (d, D), and B_k / B_v: (kv_out, D) when those targets are on.
    State (not a parameter, not saved): (B, H, r, r) fp32, rows = value dims, cols = key dims.
    """

    def __init__(self, config: DeltaMemConfig, hidden_size: int, q_out: int, kv_out: int, layer_index: int):
        super().__init__()
        self.config = config
        self.strategy = config.strategy  # how a writing call turns projections into reads and a state
        self.layer_index = layer_index
        self.rank, self.heads, D = config.rank, config.num_state_heads, config.memory_dim
        dtype = _DTYPES[config.param_dtype]
        self.in_proj = nn.Parameter(torch.empty(4 * D, hidden_size, dtype=dtype))
        self.beta_bias = nn.Parameter(torch.empty(D, dtype=dtype))
        out_features = {"q": q_out, "k": kv_out, "v": kv_out, "o": hidden_size}
        for target in config.targets:
            self.register_parameter(f"B_{target}", nn.Parameter(torch.zeros(out_features[target], D, dtype=dtype)))
        self.state: Tensor | None = None  # (B, H, r, r), None = all zeros
        self.pinned: Tensor | None = None  # a buffer writes copy into in place (see `pin`)
        self.reads: Tensor | None = None  # (B, T, D) reads of the current forward call
        self.decode_corrections: dict[str, Tensor] | None = None  # fused decode: s·B ρ per target, (B, 1, out)
        self._stacked: tuple[tuple, Tensor, dict[str, slice]] | None = None  # cache of s·[B_q; B_o; …]
        self.last_beta: Tensor | None = None  # (B, T, H, r) write gates of the current call (regulariser)
        self._cast_cache: dict[int, tuple[tuple, Tensor]] = {}  # gradient-free casts (see `_weight`)
        self.reset_parameters()

    # ----------------------------------------------------------------- parameters
    @property
    def A_q(self) -> Tensor:
        return self.in_proj[: self.config.memory_dim]

    @property
    def A_k(self) -> Tensor:
        D = self.config.memory_dim
        return self.in_proj[D : 2 * D]

    @property
    def A_v(self) -> Tensor:
        D = self.config.memory_dim
        return self.in_proj[2 * D : 3 * D]

    @property
    def W_beta(self) -> Tensor:
        return self.in_proj[3 * self.config.memory_dim :]

    def correction_matrix(self, target: str) -> Tensor:
        return getattr(self, f"B_{target}")

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming-uniform(a=√5) A_q/A_k/A_v, W_β = 0, b_β = beta_bias_init, B = 0."""
        D = self.config.memory_dim
        nn.init.kaiming_uniform_(self.in_proj[: 3 * D], a=math.sqrt(5))  # bound depends on fan_in only
        self.in_proj[3 * D :].zero_()
        self.beta_bias.fill_(self.config.beta_bias_init)
        for target in self.config.targets:
            self.correction_matrix(target).zero_()

    @torch.no_grad()
    def init_base_slice(self, base_weights: dict[str, Tensor]) -> None:
        """Release default: the first r columns of B_q / B_o are 0.05 × the unit-normed first r
        columns of W_q / W_o (state head 0 only). Other targets stay zero."""
        r, scale = self.rank, self.config.base_slice_scale
        for target, weight in base_weights.items():
            if target not in self.config.targets or target not in ("q", "o"):
                continue
            cols = weight[:, :r].float()
            cols = cols / cols.norm(dim=0, keepdim=True).clamp_min(1e-12)
            self.correction_matrix(target)[:, :r] = (scale * cols).to(self.in_proj.dtype)

    # ----------------------------------------------------------------- state
    def reset_state(self) -> None:
        self.state = None
        self.pinned = None
        self.reads = None
        self.decode_corrections = None
        self.last_beta = None

    def pin(self, buffer: Tensor) -> None:
        """Hold the state in `buffer` (B, H, r, r) fp32 from now on: the current state is copied in,
        and later gradient-free writes of the same shape copy into it rather than rebind `state`.
        A captured CUDA graph then keeps reading and writing the right memory. `reset_state` unpins."""
        if self.config.state_dtype_between_calls != "float32":
            raise ValueError(
                "pinning the state needs memory.state_dtype_between_calls=float32 (decode updates it in place)"
            )
        buffer.copy_(self.current_state(buffer.shape[0], buffer.device))
        self.state = self.pinned = buffer

    def current_state(self, batch_size: int, device: torch.device) -> Tensor:
        """The state as fp32 (B, H, r, r); zeros if none was written yet."""
        if self.state is None:
            return torch.zeros(batch_size, self.heads, self.rank, self.rank, device=device)
        if self.state.shape[0] != batch_size:
            raise StateBatchError(
                f"layer {self.layer_index}: memory state holds {self.state.shape[0]} sequence(s) but the batch "
                f"has {batch_size}; reset the state or load one of matching size (MemoryState.expand(n) "
                "stacks one state for many questions)"
            )
        return self.state.float()

    def _store(self, state: Tensor) -> None:
        pinned = self.pinned
        if pinned is not None and not state.requires_grad and state.shape == pinned.shape:
            pinned.copy_(state)
            self.state = pinned
            return
        self.pinned = None
        between = _DTYPES[self.config.state_dtype_between_calls]
        self.state = state if between == torch.float32 else state.to(between)

    # ----------------------------------------------------------------- forward
    def _matmul_dtype(self, x: Tensor) -> torch.dtype:
        """The dtype the projections and corrections run in (`config.compute_dtype`)."""
        return x.dtype if self.config.compute_dtype == "input" else self.in_proj.dtype

    def _weight(self, param: Tensor, dtype: torch.dtype) -> Tensor:
        """`param` in `dtype`. Without autograd the cast is cached per parameter version, so decode
        steps and gradient-free prefill launch no casts; with autograd it stays in the graph."""
        if param.dtype == dtype:
            return param
        if torch.is_grad_enabled() and param.requires_grad:
            return param.to(dtype)
        key = (dtype, param.data_ptr(), param._version)
        cached = self._cast_cache.get(id(param))
        if cached is None or cached[0] != key:
            cached = (key, param.detach().to(dtype))
            self._cast_cache[id(param)] = cached
        return cached[1]

    def project(self, x: Tensor) -> Tensor:
        """x: (B, T, d) -> (B, T, 4, H, r) = [A_q x, A_k x, A_v x, W_β x] in one GEMM, at least fp32."""
        B, T, _ = x.shape
        dtype = self._matmul_dtype(x)
        pre = F.linear(x.to(dtype), self._weight(self.in_proj, dtype))
        return pre.to(torch.promote_types(pre.dtype, torch.float32)).view(B, T, 4, self.heads, self.rank)

    def activate(self, projected: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(..., 4, H, r) -> q̃, k̃ (tanh + L2 norm per head), v, β = sigmoid(W_β x + b_β); one Triton
        launch each way on a GPU (`kernels.activate`), the PyTorch reference elsewhere."""
        if projected.is_cuda and fused_activate_available():
            return activate_fused(projected, self.beta_bias, _NORM_EPS)
        return activate_reference(projected, self.beta_bias, _NORM_EPS)

    def forward(self, x: Tensor, valid: Tensor | None, write: bool, segment_ids: Tensor | None = None) -> Tensor:
        """Read (and write) the memory for one forward call; returns and keeps ρ: (B, T, D).

        x: (B, T, d) attention input. valid: (B, T) bool or None. segment_ids: (B, T) long for
        SSW, −1 marking tokens that read but are not written.
        """
        B, T, _ = x.shape
        state = self.current_state(B, x.device)
        self.decode_corrections = None
        if self._fused_decode_applies(x, write):
            return self._fused_decode(x, state, valid, write)
        pre = self.project(x)
        if valid is not None:  # padding never reads or writes, whatever its hidden state holds
            pre = pre.masked_fill(~valid[:, :, None, None, None], 0.0)
        q, k, v, beta = self.activate(pre)
        self.last_beta = beta
        if not write:
            reads = read_only(q, state, valid)
        else:  # (B, T, H, r) reads and the (B, H, r, r) state after the call, as the strategy writes
            reads, new_state = self.strategy.write(
                pre, q, k, v, beta, valid, state, segment_ids, self.activate, self.config.scan_chunk_size
            )
            self._store(new_state)
        self.reads = reads.reshape(B, T, -1).to(self._matmul_dtype(x))
        return self.reads

    def _fused_decode_applies(self, x: Tensor, write: bool) -> bool:
        """One token per sequence on a GPU, no autograd, fp32 state, and not a segment write (SSW)."""
        return (
            x.shape[1] == 1
            and x.is_cuda
            and not torch.is_grad_enabled()
            and self.config.state_dtype_between_calls == "float32"
            and not (write and self.strategy.needs_segments)
            and decode_kernel_available()
        )

    def _fused_decode(self, x: Tensor, state: Tensor, valid: Tensor | None, write: bool) -> Tensor:
        """The decode step in two launches: one Triton kernel (projection, gates, read, in-place
        write; ρ stored in x's dtype) and one GEMV for every target's s·B ρ at once."""
        from .kernels.decode_step import memory_step_triton

        state = state.contiguous()
        reads = memory_step_triton(
            x[:, 0],
            self.in_proj,
            self.beta_bias,
            state,
            None if valid is None else valid[:, 0],
            write,
            self.heads,
            self.rank,
            out_dtype=x.dtype,
        )  # (B, D)
        self.state = state
        self.last_beta = None
        self.reads = reads[:, None]  # (B, 1, D)
        stacked, parts = self._stacked_corrections(x.dtype)
        every = F.linear(reads, stacked)  # (B, Σ out)
        self.decode_corrections = {target: every[:, None, part] for target, part in parts.items()}
        return self.reads

    def _stacked_corrections(self, dtype: torch.dtype) -> tuple[Tensor, dict[str, slice]]:
        """s·[B_q; B_o; …] in `dtype` (Σ out, D) and each target's rows; rebuilt only when a B changed
        (parameter versions are part of the key), so decode steps and captured graphs reuse it."""
        mats = [self.correction_matrix(t) for t in self.config.targets]
        key = (dtype, self.config.scale, *((m.data_ptr(), m._version) for m in mats))
        if self._stacked is None or self._stacked[0] != key:
            with torch.no_grad():
                stacked = (self.config.scale * torch.cat([m.float() for m in mats])).to(dtype)
            parts, start = {}, 0
            for target, m in zip(self.config.targets, mats):
                parts[target] = slice(start, start + m.shape[0])
                start += m.shape[0]
            self._stacked = (key, stacked, parts)
        return self._stacked[1], self._stacked[2]

    def correction(self, target: str) -> Tensor:
        """B_target ρ for the current call, unscaled: (B, T, out_features). Scale with `config.scale`."""
        if self.reads is None:
            raise RuntimeError(f"layer {self.layer_index}: correction requested before the memory was read")
        return F.linear(self.reads, self._weight(self.correction_matrix(target), self.reads.dtype))

    def add_correction(self, target: str, out: Tensor) -> Tensor:
        """out + s·B_target ρ for the current (non-decode) call, accumulated into `out` in place:
        out (B, T, out_features) is the frozen projection's fresh output, so one rank-D GEMM adds
        onto it (no separate (B, T, out) correction tensor, no copy of one into a GEMM's addend)."""
        if self.reads is None:
            raise RuntimeError(f"layer {self.layer_index}: correction requested before the memory was read")
        weight = self._weight(self.correction_matrix(target), self.reads.dtype)  # (out, D)
        flat = out.view(-1, out.shape[-1])  # (B·T, out)
        reads = self.reads.reshape(-1, self.reads.shape[-1])  # (B·T, D)
        if reads.dtype == out.dtype:
            flat.addmm_(reads, weight.t(), alpha=self.config.scale)
        else:  # compute_dtype=param under a lower-precision backbone: the GEMM in fp32, then cast
            flat.add_(F.linear(reads, weight).to(out.dtype), alpha=self.config.scale)
        return out


class CorrectedLinear(nn.Module):
    """A frozen projection plus the memory's correction: y = base(x) + s·B ρ.

    The memory layer is held by reference (not registered as a child) so its parameters keep a
    single home, `self_attn.delta_mem`.
    """

    def __init__(self, base_layer: nn.Linear, memory: DeltaMemLayer, target: str):
        super().__init__()
        self.base_layer = base_layer
        self.target = target
        self.__dict__["memory"] = memory

    @property
    def weight(self) -> Tensor:  # some HF code paths read `q_proj.weight` directly
        return self.base_layer.weight

    def forward(self, x: Tensor) -> Tensor:
        """base(x) + s·B ρ. A fused decode step has s·B ρ ready and adds it as the GEMM's bias (one
        token of one sequence) or addend; otherwise the memory accumulates it onto base(x) in place."""
        base, memory = self.base_layer, self.memory
        if memory.decode_corrections is None:
            return memory.add_correction(self.target, base(x))
        correction = memory.decode_corrections[self.target].to(x.dtype)  # (B, 1, out), already scaled
        if base.bias is not None:
            return base(x) + correction
        if x.numel() == base.in_features:  # one token of one sequence
            return F.linear(x, base.weight, correction.reshape(base.out_features))
        out = torch.addmm(correction.reshape(-1, base.out_features), x.reshape(-1, base.in_features), base.weight.t())
        return out.view(*x.shape[:-1], base.out_features)

    def extra_repr(self) -> str:
        return f"target={self.target}"
