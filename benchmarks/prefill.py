"""Prefill time: one forward over B×T random token ids, frozen backbone vs δ-mem (writing).

    python benchmarks/prefill.py --backbone qwen3_4b --random-init --lengths 1024,8192,32768

Both variants run under no_grad with `use_cache=False` and `logits_to_keep=1` (when the model
supports it), so the vocabulary projection is one position for both. The δ-mem state is reset
before every call and checked after it: every layer must hold a non-zero state.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    assert_memory_written,
    base_parser,
    int_list,
    load_setup,
    random_ids,
    segment_kwargs,
    supports_logits_to_keep,
    vocab_size,
    with_memory,
)
from benchmarks.kernel_profile import kernel_profile
from benchmarks.timing import Variant, all_checked, arguments, case, environment, measure_interleaved, report


def parse(argv: list[str] | None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int_list, default=[1024, 8192, 32768], help="prompt lengths T")
    parser.add_argument("--batch", type=int_list, default=[1], help="batch sizes B")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the prefill benchmark; print and return the results dict."""
    args = parse(argv)
    setup = load_setup(args)
    frozen, wrapped = setup.model, with_memory(setup)
    extra = {"use_cache": False}
    if supports_logits_to_keep(frozen):
        extra["logits_to_keep"] = 1
    cases, profiles = [], {}
    for batch in args.batch:
        for length in args.lengths:
            ids = random_ids(batch, length, vocab_size(frozen), setup.device, args.seed)
            segments = segment_kwargs(setup.memory_config, batch, length, args.ssw_segment, setup.device)

            def run_frozen(_: None, ids: torch.Tensor = ids) -> None:
                with torch.no_grad():
                    frozen(input_ids=ids, **extra)

            def run_memory(_: None, ids: torch.Tensor = ids, segments: dict = segments) -> None:
                with torch.no_grad():
                    wrapped(input_ids=ids, **segments, **extra)

            variants = [
                Variant("frozen", run_frozen, tokens=batch * length),
                Variant(
                    "deltamem",
                    run_memory,
                    setup=wrapped.reset_state,
                    check=lambda _: assert_memory_written(wrapped),
                    tokens=batch * length,
                ),
            ]
            stats = measure_interleaved(variants, args.reps, args.warmup, setup.device)
            if args.profile:
                profiles[f"B={batch} T={length}"] = kernel_profile(variants, setup.device, [("deltamem", "frozen")])
            cases.append(
                case(f"B={batch} T={length}", {"batch": batch, "length": length}, stats, [("deltamem", "frozen")])
            )
            wrapped.reset_state()
    results = {
        "benchmark": "prefill",
        "env": environment(setup.device, "benchmarks/prefill.py", argv),
        "args": arguments(args),
        "backbone": {"name": setup.spec.name, "loaded_from": setup.loaded_from, "dtype": setup.spec.dtype},
        "memory": setup.memory_config.to_dict(),
        "forward_kwargs": extra,
        "cases": cases,
        "memory_written": all_checked(cases, "deltamem"),
    }
    if profiles:
        results["profiles"] = profiles
    return report(results, args)


if __name__ == "__main__":
    main()
