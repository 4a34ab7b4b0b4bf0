"""The δ-mem recurrence alone: `deltamem.scan.delta_scan`, forward and forward+backward.

    python benchmarks/scan.py --batch 4 --lengths 2048 --heads 1,4 --rank 8 --device cuda

Inputs are random (q, k unit-norm per head, v normal, β = sigmoid(normal − 1.5)), built before
timing. `reference` (the token loop) runs only for T ≤ --reference-max-t unless
--include-reference. fwd runs under no_grad; fwd+bwd backpropagates random cotangents of the
reads and the final state to all four inputs. On CUDA both Triton kernel families are timed:
`triton_rows` (a program per state row walking the chunks) and `triton_chunks` (chunks side by
side). The chunk size of `chunked` defaults to the memory config's `scan_chunk_size`. No backbone
is built: --backbone only feeds the config composition.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.common import base_parser, compose_config, int_list
from benchmarks.timing import Variant, arguments, case, environment, measure_interleaved, report
from deltamem.kernels.chunk_scan import triton_available
from deltamem.scan import delta_scan

Inputs = tuple[Tensor, Tensor, Tensor, Tensor]


def parse(argv: list[str] | None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lengths", type=int_list, default=[2048], help="sequence lengths T")
    parser.add_argument("--heads", type=int_list, default=[1, 4], help="state heads H (1 TSW/SSW, 4 MSW)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, help="chunk length C (default: memory.scan_chunk_size)")
    parser.add_argument("--include-reference", action="store_true", help="time the token loop at any T")
    parser.add_argument("--reference-max-t", type=int, default=256, help="longest T the loop runs by default")
    return parser.parse_args(argv)


def make_inputs(B: int, T: int, H: int, r: int, device: torch.device, dtype: torch.dtype, seed: int) -> Inputs:
    gen = torch.Generator().manual_seed(seed)
    q, k, v, b = (torch.randn(B, T, H, r, generator=gen) for _ in range(4))
    q, k, beta = F.normalize(q, dim=-1), F.normalize(k, dim=-1), torch.sigmoid(b - 1.5)
    return tuple(x.to(device=device, dtype=dtype) for x in (q, k, v, beta))  # type: ignore[return-value]


def check_output(out: tuple[Tensor, Tensor]) -> None:
    reads, final = out
    if not (bool(torch.isfinite(reads).all()) and bool(torch.isfinite(final).all())):
        raise AssertionError("scan produced non-finite values")
    if not bool((final != 0).any()):
        raise AssertionError("scan left the state at zero")


def check_grads(leaves: Inputs) -> None:
    for name, leaf in zip("qkvb", leaves):
        if leaf.grad is None or not bool(torch.isfinite(leaf.grad).all()) or not bool((leaf.grad != 0).any()):
            raise AssertionError(f"scan backward: no finite, non-zero gradient for {name}")


def scan_variants(inputs: Inputs, impl: str, chunk: int, seed: int) -> list[Variant]:
    """`<impl>_fwd` and `<impl>_fwd_bwd` over fixed inputs."""
    B, T, H, r = inputs[0].shape
    gen = torch.Generator().manual_seed(seed + 1)
    grad_reads = torch.randn(B, T, H, r, generator=gen).to(inputs[0].device)
    grad_state = torch.randn(B, H, r, r, generator=gen).to(inputs[0].device)

    def forward(_: None) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return delta_scan(*inputs, impl=impl, chunk_size=chunk)

    def leaves() -> Inputs:
        return tuple(x.detach().clone().requires_grad_(True) for x in inputs)  # type: ignore[return-value]

    def forward_backward(xs: Inputs) -> Inputs:
        reads, final = delta_scan(*xs, impl=impl, chunk_size=chunk)
        ((reads * grad_reads).sum() + (final * grad_state).sum()).backward()
        return xs

    return [
        Variant(f"{impl}_fwd", forward, check=check_output, tokens=B * T),
        Variant(f"{impl}_fwd_bwd", forward_backward, setup=leaves, check=check_grads, tokens=B * T),
    ]


def main(argv: list[str] | None = None) -> dict:
    """Run the scan benchmark; print and return the results dict."""
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec, memory_config = compose_config(args)
    device = (
        torch.device(args.device)
        if args.device and args.device != "auto"
        else (torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    )
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype or "float32"]
    chunk = args.chunk_size or memory_config.scan_chunk_size
    cases = []
    for T in args.lengths:
        impls = ["chunked"] + (["triton_rows", "triton_chunks"] if device.type == "cuda" and triton_available() else [])
        impls += ["reference"] if args.include_reference or T <= args.reference_max_t else []
        for H in args.heads:
            inputs = make_inputs(args.batch, T, H, args.rank, device, dtype, args.seed)
            variants = [v for impl in impls for v in scan_variants(inputs, impl, chunk, args.seed)]
            stats = measure_interleaved(variants, args.reps, args.warmup, device)
            ratios = [("chunked_fwd_bwd", "chunked_fwd")]
            if "triton_rows" in impls:
                ratios += [(f"chunked_{d}", f"triton_rows_{d}") for d in ("fwd", "fwd_bwd")]
                ratios += [(f"triton_rows_{d}", f"triton_chunks_{d}") for d in ("fwd", "fwd_bwd")]
            if "reference" in impls:
                ratios += [("reference_fwd", "chunked_fwd"), ("reference_fwd_bwd", "chunked_fwd_bwd")]
            params = {
                "batch": args.batch,
                "length": T,
                "heads": H,
                "rank": args.rank,
                "chunk": chunk,
                "dtype": str(dtype).removeprefix("torch."),
            }
            cases.append(case(f"B={args.batch} T={T} H={H} r={args.rank}", params, stats, ratios))
    results = {
        "benchmark": "scan",
        "env": environment(device, "benchmarks/scan.py", argv),
        "args": arguments(args),
        "cases": cases,
    }
    return report(results, args)


if __name__ == "__main__":
    main()
