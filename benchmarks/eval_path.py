"""The evaluation path end to end: one LoCoMo-sized conversation's questions through `ChatDecoder`.

    python benchmarks/eval_path.py --backbone qwen25_coder_0p5b --random-init --prefix 22000 \
        --questions 64 --batch 1,32 --json benchmarks/results/eval_path.json

Each timed call answers `--questions` questions after one conversation, the way `EvalRunner`
asks them under `full_context`. The conversation (`--prefix` tokens) is the prompts' shared head:
it runs once per call, in chunks, with δ-mem writing it into its state. Then, per batch of `--batch`
rows, the prefix's KV cache and δ-mem's state are copied to the batch, each question's tail (about
`--tail` tokens) runs, and `--new-tokens` greedy tokens are decoded. Four variants:
`frozen_eager`, `frozen_graph`, `deltamem_eager` and `deltamem_graph` (the decoder's
`decode_loop`; `graph` replays static-cache steps from a CUDA graph, and on CPU runs them eagerly).
questions/s = questions / median seconds. Every variant's tokens are checked against its eager
twin's, so a speed-up that changed an answer fails the run. Prompts are random token ids, and the
answers are compared as ids: `IdTokenizer` decodes a token list to its numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import assert_memory_written, base_parser, int_list, load_setup, vocab_size, with_memory
from benchmarks.timing import Variant, arguments, case, environment, measure_interleaved, report
from evals.decoding import ChatDecoder, DecoderBackend
from evals.deltamem_method import DeltaMemBackend
from evals.types import Generation

LOCOMO_SAMPLING = {"do_sample": True, "temperature": 0.4, "top_p": 0.9, "top_k": 10}  # evals/locomo.py, generation()


class IdTokenizer:
    """What `ChatDecoder` needs of a tokenizer when prompts arrive as ids: ids back as text."""

    def __init__(self, pad_token_id: int, eos_token_id: int | None):
        self.pad_token_id, self.eos_token_id = pad_token_id, eos_token_id

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, ids))


def parse(argv: list[str] | None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=int, default=22000, help="conversation tokens (LoCoMo: about 22K)")
    parser.add_argument("--questions", type=int, default=64, help="questions asked after the conversation")
    parser.add_argument("--tail", type=int, default=24, help="tokens of a question's own part (± 8 across questions)")
    parser.add_argument("--batch", type=int_list, default=[1, 32], help="decoder batch sizes")
    parser.add_argument("--new-tokens", type=int, default=32, help="greedy tokens per answer (HotpotQA: 32)")
    parser.add_argument("--chunk", type=int, default=4096, help="prefill chunk (the methods' prefill_chunk)")
    parser.add_argument("--sample", action="store_true",
                        help="sample as LoCoMo's paper protocol does (T 0.4, top-p 0.9, top-k 10, seed 42 + question)")
    return parser.parse_args(argv)


def prompts(args: Any, vocab: int) -> list[list[int]]:
    """One shared conversation and `--questions` tails of varying length, as token ids."""
    g = torch.Generator().manual_seed(args.seed)
    head = torch.randint(3, vocab, (args.prefix,), generator=g).tolist()
    lengths = torch.randint(max(1, args.tail - 8), args.tail + 9, (args.questions,), generator=g).tolist()
    return [head + torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


def main(argv: list[str] | None = None) -> dict:
    """Run the evaluation-path benchmark; print and return the results dict."""
    args = parse(argv)
    if args.memory == "ssw":  # its writes follow message ids, which id-only prompts do not carry
        raise SystemExit("eval_path.py times --memory tsw or msw: SSW writes need chat prompts with message ids")
    setup = load_setup(args)
    frozen, wrapped = setup.model, with_memory(setup)
    asks = prompts(args, vocab_size(frozen))
    sampling = [LOCOMO_SAMPLING | {"seed": 42 + i} if args.sample else {} for i in range(len(asks))]
    settings = [Generation(max_new_tokens=args.new_tokens, **extra) for extra in sampling]
    window = args.prefix + args.tail + 8 + args.new_tokens + 1
    tokenizer = IdTokenizer(pad_token_id=0, eos_token_id=None)
    no_stop = {vocab_size(frozen)}  # an id past the vocabulary: every answer is --new-tokens long, the same work
    backends = {"frozen": DecoderBackend(frozen), "deltamem": DeltaMemBackend(wrapped)}
    cases = []
    for batch in args.batch:
        decoders = {
            f"{name}_{loop}": ChatDecoder(backend, tokenizer, window, batch, args.chunk, decode_loop=loop)
            for name, backend in backends.items() for loop in ("eager", "graph")
        }
        for decoder in decoders.values():
            decoder.stop_ids = no_stop
        answers: dict[str, list[str]] = {}

        def answer(name: str) -> list[str]:
            decoder = decoders[name]
            decoder.forget_prefix()  # the conversation runs in every timed call, as for a new context
            if name.startswith("deltamem"):
                wrapped.reset_state()
            texts = [a.text for a in decoder.generate(asks, settings)]
            answers[name] = texts
            return texts

        def check(texts: list[str], name: str) -> None:
            if any(len(t.split()) != args.new_tokens for t in texts):
                raise AssertionError(f"{name}: an answer is not {args.new_tokens} tokens long")
            if name.startswith("deltamem"):
                assert_memory_written(wrapped)
            twin = name.replace("_graph", "_eager")
            if name.endswith("_graph") and twin in answers and answers[twin] != texts:
                differ = sum(a != b for a, b in zip(answers[twin], texts))
                raise AssertionError(f"{name}: {differ} of {len(texts)} answers differ from {twin}'s")

        variants = [
            Variant(name, lambda _, name=name: answer(name), check=lambda t, name=name: check(t, name),
                    tokens=len(asks) * args.new_tokens)
            for name in decoders
        ]
        stats = measure_interleaved(variants, args.reps, args.warmup, setup.device)
        for name, row in stats.items():
            row["questions_per_s"] = len(asks) / row["median_s"] if row["median_s"] else None
            row["loops_used"] = dict(decoders[name].loops_used)
            row["graph_captures"] = getattr(decoders[name]._static, "captures", 0)
        ratios = [("deltamem_graph", "frozen_graph"), ("deltamem_eager", "frozen_eager"),
                  ("frozen_graph", "frozen_eager"), ("deltamem_graph", "deltamem_eager")]
        params = {"batch": batch, "prefix": args.prefix, "questions": len(asks), "new_tokens": args.new_tokens,
                  "sampled": bool(args.sample)}
        cases.append(case(f"B={batch} prefix={args.prefix}", params, stats, ratios))
        if args.json is not None:  # each finished case at once: a run stopped at a time limit keeps them
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"benchmark": "eval_path", "partial": True, "cases": cases},
                                            indent=1, default=str) + "\n")
    results = {
        "benchmark": "eval_path",
        "env": environment(setup.device, "benchmarks/eval_path.py", argv),
        "args": arguments(args),
        "backbone": {"name": setup.spec.name, "loaded_from": setup.loaded_from, "dtype": setup.spec.dtype},
        "memory": setup.memory_config.to_dict(),
        "cases": cases,
        "note": "time ratios a/b < 1 mean a is faster; the target is deltamem_graph ≥ 0.95× frozen_graph's "
                "questions/s, i.e. a time ratio deltamem_graph/frozen_graph ≤ 1/0.95",
    }
    return report(results, args)


if __name__ == "__main__":
    main()
