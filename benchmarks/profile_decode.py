"""Where a δ-mem decode step spends its time: kernel launches and CUDA time per token, frozen vs δ-mem.

    python benchmarks/profile_decode.py --backbone qwen3_4b --random-init --device cuda --dtype bfloat16

A 4K-token prefill (untimed), then `--steps` one-token decode steps under `torch.profiler` for the
frozen backbone and for δ-mem; prints launches per token, CUDA time per token, wall time per
token and the top kernels δ-mem adds. Explains the decode gap in `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import (
    base_parser,
    cache_argument,
    load_setup,
    random_ids,
    returned_cache,
    vocab_size,
    with_memory,
)
from benchmarks.kernel_profile import kernel_times


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def profile_steps(model, reference, ids: torch.Tensor, steps: int) -> tuple[Counter, Counter, float]:
    """(launch counts, CUDA µs per kernel name, wall seconds per token) over `steps` decode steps."""
    name = cache_argument(reference)
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache, token = returned_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(3):  # warm-up (Triton compiles, allocator)
        out = model(input_ids=token, use_cache=True, **{name: cache})
        cache, token = returned_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
    _sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, use_cache=True, **{name: cache})
            cache, token = returned_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
        _sync()
        wall = (time.perf_counter() - start) / steps
    counts, times = kernel_times(prof, ids.device)
    return counts, times, wall


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    setup = load_setup(args)
    frozen, wrapped = setup.model, with_memory(setup)
    ids = random_ids(1, args.prompt, vocab_size(frozen), setup.device, args.seed)
    rows = {}
    for label, model in (("frozen", frozen), ("deltamem", wrapped)):
        if label == "deltamem":
            wrapped.reset_state()
        rows[label] = profile_steps(model, frozen, ids, args.steps)
    print(f"{'variant':10s} {'launches/token':>15s} {'CUDA ms/token':>14s} {'wall ms/token':>14s}")
    for label, (counts, times, wall) in rows.items():
        launches = sum(counts.values()) / args.steps
        print(f"{label:10s} {launches:15.1f} {sum(times.values()) / 1000 / args.steps:14.2f} {1000 * wall:14.2f}")
    extra_counts = rows["deltamem"][0] - rows["frozen"][0]
    extra_times = rows["deltamem"][1] - rows["frozen"][1]
    print("\nkernels δ-mem adds (per token): launches, CUDA µs")
    for key, count in extra_counts.most_common(15):
        print(f"  {count / args.steps:6.1f}  {extra_times[key] / args.steps:9.1f}  {key[:110]}")


if __name__ == "__main__":
    main()
