"""Decoding throughput, frozen backbone vs δ-mem: decode-only and full `generate` tokens/s.

    python benchmarks/decode.py --backbone qwen3_4b --random-init --prompts 4096,32768 --batch 1,16

* decode-only: a prefill with the KV cache (untimed; for δ-mem it also writes the prompt into
  the state), then `--new-tokens` forward calls of one token each (greedy, argmax on device) are
  timed; tok/s = B × new tokens / time.
* generate: `generate(max_new_tokens=N, min_new_tokens=N, do_sample=False)` from the prompt,
  prefill included; δ-mem calls `DeltaMemModel.generate`. tok/s = B × N / time.
* graph: decode-only again, but from a static KV cache with each step replayed from a CUDA graph
  (`deltamem.graph_decode.GraphDecoder`; prefill and capture untimed). tok/s = B × N / time.
* graph_generate: `GraphDecoder.generate` (prefill, capture on first use, N − 1 replays) timed whole.
δ-mem state is reset before every call and must be non-zero in every layer after it. Under SSW
the prompt is written as segments of `--ssw-segment` tokens and decode steps only read (as
`DeltaMemModel.generate` does).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks.common import (
    assert_memory_written,
    base_parser,
    cache_argument,
    int_list,
    load_setup,
    random_ids,
    returned_cache,
    segment_kwargs,
    supports_logits_to_keep,
    vocab_size,
    with_memory,
)
from benchmarks.timing import Variant, all_checked, arguments, case, environment, measure_interleaved, report
from deltamem.graph_decode import GraphDecoder

MODES = ("decode", "generate", "graph", "graph_generate")


def parse(argv: list[str] | None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int_list, default=[4096, 32768], help="prompt lengths")
    parser.add_argument("--batch", type=int_list, default=[1, 16], help="batch sizes")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per sequence")
    parser.add_argument(
        "--modes", default="decode,generate", help="comma list of decode, generate, graph, graph_generate"
    )
    return parser.parse_args(argv)


class Decoder:
    """Prefill and one-token decode steps for one model (frozen or δ-mem) with the KV cache."""

    def __init__(self, model: nn.Module, reference: nn.Module, prefill_kwargs: dict, step_kwargs: dict):
        self.model, self.prefill_kwargs, self.step_kwargs = model, prefill_kwargs, step_kwargs
        self.cache_name = cache_argument(reference)
        self.keep = {"logits_to_keep": 1} if supports_logits_to_keep(reference) else {}

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> tuple[Any, torch.Tensor]:
        out = self.model(input_ids=ids, use_cache=True, **self.keep, **self.prefill_kwargs)
        return returned_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)

    @torch.no_grad()
    def steps(self, prepared: tuple[Any, torch.Tensor], count: int) -> torch.Tensor:
        cache, token = prepared
        for _ in range(count):
            out = self.model(input_ids=token, use_cache=True, **{self.cache_name: cache}, **self.step_kwargs)
            cache = returned_cache(out)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        return token


def main(argv: list[str] | None = None) -> dict:
    """Run the decoding benchmark; print and return the results dict."""
    args = parse(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= set(MODES):
        raise SystemExit(f"--modes takes a comma list of {', '.join(MODES)}; got {args.modes!r}")
    setup = load_setup(args)
    frozen, wrapped = setup.model, with_memory(setup)
    ssw = setup.memory_config.write == "ssw"
    pad = frozen.generation_config.pad_token_id
    pad = 0 if pad is None else pad
    n_new = args.new_tokens
    cases = []
    for batch in args.batch:
        for length in args.prompts:
            ids = random_ids(batch, length, vocab_size(frozen), setup.device, args.seed)
            segments = segment_kwargs(setup.memory_config, batch, length, args.ssw_segment, setup.device)
            plain = Decoder(frozen, frozen, {}, {})
            memory = Decoder(wrapped, frozen, segments, {"write": False} if ssw else {})

            def memory_prefill(ids: torch.Tensor = ids, memory: Decoder = memory) -> tuple[Any, torch.Tensor]:
                wrapped.reset_state()
                return memory.prefill(ids)

            def generate(model: Any, ids: torch.Tensor = ids, **extra: Any) -> torch.Tensor:
                mask = torch.ones_like(ids)
                return model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=n_new,
                    min_new_tokens=n_new,
                    do_sample=False,
                    pad_token_id=pad,
                    **extra,
                )

            def check_generated(out: torch.Tensor, length: int = length, memory: bool = False) -> None:
                if out.shape[1] != length + n_new:
                    raise AssertionError(f"generate returned {out.shape[1] - length} new tokens, expected {n_new}")
                if memory:
                    assert_memory_written(wrapped)

            def graph_ready(g: GraphDecoder, name: str, ids: torch.Tensor = ids) -> None:
                """Prefill (δ-mem from an empty state) and capture, so the timed part is N replays."""
                if name == "deltamem":
                    wrapped.reset_state()
                g.prefill(ids, None, n_new + 2, **(segments if name == "deltamem" else {}))
                g.decode(1)  # the first call captures the graph (its warm-up runs one real step)

            tokens = batch * n_new
            variants = []
            if "decode" in modes:
                variants += [
                    Variant(
                        "frozen_decode",
                        lambda p, d=plain: d.steps(p, n_new),
                        setup=lambda d=plain, ids=ids: d.prefill(ids),
                        tokens=tokens,
                    ),
                    Variant(
                        "deltamem_decode",
                        lambda p, d=memory: d.steps(p, n_new),
                        setup=memory_prefill,
                        check=lambda _: assert_memory_written(wrapped),
                        tokens=tokens,
                    ),
                ]
            if "generate" in modes:
                variants += [
                    Variant("frozen_generate", lambda _: generate(frozen), check=check_generated, tokens=tokens),
                    Variant(
                        "deltamem_generate",
                        lambda _: generate(wrapped, **segments),
                        setup=wrapped.reset_state,
                        check=lambda out: check_generated(out, memory=True),
                        tokens=tokens,
                    ),
                ]
            if "graph" in modes or "graph_generate" in modes:
                graphs = {"frozen": GraphDecoder(frozen), "deltamem": GraphDecoder(wrapped)}
            if "graph" in modes:
                variants += [
                    Variant(
                        f"{name}_graph",
                        lambda _, g=graphs[name]: g.decode(n_new),
                        setup=lambda g=graphs[name], name=name, ids=ids: graph_ready(g, name, ids),
                        check=(lambda _: assert_memory_written(wrapped)) if name == "deltamem" else None,
                        tokens=tokens,
                    )
                    for name in ("frozen", "deltamem")
                ]
            if "graph_generate" in modes:
                variants += [
                    Variant(
                        f"{name}_graph_generate",
                        lambda _, g=graphs[name], extra=extra, ids=ids: g.generate(ids, max_new_tokens=n_new, **extra),
                        setup=wrapped.reset_state if name == "deltamem" else (lambda: None),
                        check=(lambda _: assert_memory_written(wrapped)) if name == "deltamem" else None,
                        tokens=tokens,
                    )
                    for name, extra in (("frozen", {}), ("deltamem", segments))
                ]

            stats = measure_interleaved(variants, args.reps, args.warmup, setup.device)
            ratios = [(f"deltamem_{m}", f"frozen_{m}") for m in modes]
            cases.append(
                case(
                    f"B={batch} prompt={length}", {"batch": batch, "prompt": length, "new_tokens": n_new}, stats, ratios
                )
            )
            wrapped.reset_state()
    results = {
        "benchmark": "decode",
        "env": environment(setup.device, "benchmarks/decode.py", argv),
        "args": arguments(args),
        "backbone": {"name": setup.spec.name, "loaded_from": setup.loaded_from, "dtype": setup.spec.dtype},
        "memory": setup.memory_config.to_dict(),
        "cases": cases,
        "memory_written": {f"deltamem_{m}": all_checked(cases, f"deltamem_{m}") for m in modes},
    }
    return report(results, args)


if __name__ == "__main__":
    main()
