"""Training-step cost: a δ-mem episode vs PEFT LoRA (r 8, q/o) vs the frozen forward+backward.

    python benchmarks/train_step.py --backbone qwen3_4b --random-init --write 8192 --read 512

* deltamem: reset the state; write pass over `--write` tokens with gradients (no logits);
  read pass over `--read` tokens with writes off; cross-entropy on the read tokens; backward
  (gradients reach every layer's memory through the written state).
* lora: PEFT LoRA r 8, alpha 16, dropout 0 on q_proj and o_proj; one forward over the
  concatenation write ⧺ read (same W + R tokens, the history in the context instead of in a
  state), the same cross-entropy on the R read tokens (`logits_to_keep=R`); backward.
* frozen: the plain backbone over the same concatenation, gradients w.r.t. `inputs_embeds`
  (so the whole backward through the activations runs, with no weight gradient): the floor.
The loss is the mean next-token cross-entropy over positions 1..R-1 of the read tokens, for all
three. No optimizer step is timed. On a GPU the backbone runs in bf16 unless --dtype says else.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import (
    assert_memory_written,
    base_parser,
    compose_config,
    load_setup,
    random_ids,
    segment_kwargs,
    supports_logits_to_keep,
    twin,
    vocab_size,
    with_memory,
)
from benchmarks.graph_step import GraphedStep
from benchmarks.kernel_profile import kernel_profile
from benchmarks.timing import Variant, all_checked, arguments, case, environment, measure_interleaved, report


def parse(argv: list[str] | None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--write", type=int, default=8192, help="tokens written into the memory")
    parser.add_argument("--read", type=int, default=512, help="tokens read (writes off), with the loss")
    parser.add_argument("--batch", type=int, default=1, help="episodes per step")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument(
        "--graph", action="store_true", help="also time each step replayed from a CUDA graph (GPU; not SSW)"
    )
    return parser.parse_args(argv)


def read_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy within the read tokens: logits (B, R, V), targets (B, R)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets[:, 1:].flatten())


def lora_twin(model: nn.Module, rank: int, alpha: float) -> nn.Module:
    """PEFT LoRA on q_proj/o_proj of a weight-sharing twin of `model`."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "o_proj"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # PEFT reads the deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(twin(model), config)


def clear_grads(params: list[nn.Parameter]) -> None:
    for param in params:
        param.grad = None


def require_grads(groups: dict[str, list[nn.Parameter]], what: str) -> None:
    """Raise unless every group (one per layer) received a finite, non-zero gradient."""
    for name, params in groups.items():
        grads = [p.grad for p in params if p.grad is not None]
        if not grads or not any(bool((g != 0).any()) for g in grads):
            raise AssertionError(f"{what}: no non-zero gradient reached {name}")
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            raise AssertionError(f"{what}: non-finite gradient in {name}")


def graphed_steps(
    variants: list[Variant], params: dict[str, list[Tensor]], errors: dict[str, str]
) -> dict[str, GraphedStep]:
    """Capture each eager variant's step as a CUDA graph (its `setup` prepares every capture), all in
    one memory pool; `params[name]` are the tensors whose gradients the step fills. A capture that
    fails is recorded in `errors` (name -> message), not raised."""
    graphed: dict[str, GraphedStep] = {}
    pool = None
    for variant in variants:
        try:
            step = functools.partial(variant.run, None)  # every setup here prepares in place, returns None
            graphed[variant.name] = GraphedStep(step, params[variant.name], variant.setup, pool=pool)
            pool = graphed[variant.name].pool
        except Exception as error:  # noqa: BLE001 - reported per variant; the others still run
            errors[variant.name] = f"{type(error).__name__}: {error}"
            torch.cuda.synchronize()
    return graphed


def graph_case(
    eager: dict,
    variants: list[Variant],
    params: dict[str, list[Tensor]],
    checks: dict[str, Callable[[Any], None]],
    errors: dict[str, str],
    args,
    device: torch.device,
) -> dict:
    """Time the eager variants' steps replayed from CUDA graphs, interleaved. Every replay passes its
    check (`checks[name]`, else the variant's own) and gives the loss of an eager step (1e-3
    relative). The eager LoRA row rides along for the deltamem_graph/lora ratio."""
    graphed = graphed_steps(variants, params, errors)

    def checked(variant: Variant, graph: GraphedStep):  # the step's check, then replay == eager loss
        own = checks.get(variant.name, variant.check)

        def check(output) -> None:
            if own is not None:
                own(output)
            graph.replay_matches_eager(output)

        return check

    timed = []
    for v in variants:
        if v.name in graphed:
            graph = graphed[v.name]
            timed.append(Variant(f"{v.name}_graph", graph, graph.restore_grads, checked(v, graph), v.tokens))
    stats = measure_interleaved(timed, args.reps, args.warmup, device)
    for one in stats.values():  # replays allocate nothing: peak memory is in the eager rows
        one["peak_mb"] = one["peak_mb_samples"] = None
    stats["lora"] = eager["variants"]["lora"]
    ratios = [("deltamem_graph", "frozen_graph"), ("lora_graph", "frozen_graph")]
    ratios += [("deltamem_graph", "lora_graph"), ("deltamem_graph", "lora")]
    return case(f"{eager['name']} CUDA graph", dict(eager["params"], graph=True), stats, ratios)


def main(argv: list[str] | None = None) -> dict:
    """Run the training-step benchmark; print and return the results dict."""
    args = parse(argv)
    on_cuda = compose_config(args)[0].resolved_device().type == "cuda"
    if args.graph and not on_cuda:
        raise SystemExit("--graph needs a CUDA device (CUDA graphs); pass --device cuda")
    if args.dtype is None and on_cuda:
        args.dtype = "bfloat16"
    setup = load_setup(args)
    frozen, wrapped = setup.model, with_memory(setup)
    lora = lora_twin(frozen, args.lora_rank, args.lora_alpha)
    if any("lora" in name for name, _ in frozen.named_modules()):
        raise RuntimeError("PEFT changed the frozen backbone")
    memory_params = [p for _, p in wrapped.memory_parameters()]
    memory_groups = {f"memory layer {i}": list(m.parameters()) for i, m in wrapped.memory_layers.items()}
    lora_params = [p for p in lora.parameters() if p.requires_grad]
    B, W, R = args.batch, args.write, args.read
    write_ids = random_ids(B, W, vocab_size(frozen), setup.device, args.seed)
    read_ids = random_ids(B, R, vocab_size(frozen), setup.device, args.seed + 1)
    joined = torch.cat([write_ids, read_ids], dim=1)
    keep = {"logits_to_keep": R} if supports_logits_to_keep(frozen) else {}
    segments = segment_kwargs(setup.memory_config, B, W, args.ssw_segment, setup.device)

    def memory_step(_: None) -> Tensor:
        wrapped.write_history(write_ids, **segments)
        logits = wrapped(input_ids=read_ids, write=False, use_cache=False).logits
        loss = read_loss(logits, read_ids)
        loss.backward()
        return loss.detach()

    def lora_step(_: None) -> Tensor:
        logits = lora(input_ids=joined, use_cache=False, **keep).logits[:, -R:]
        loss = read_loss(logits, read_ids)
        loss.backward()
        return loss.detach()

    def frozen_step(_: None) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            embeds = frozen.get_input_embeddings()(joined)
        embeds.requires_grad_(True)
        logits = frozen(inputs_embeds=embeds, use_cache=False, **keep).logits[:, -R:]
        loss = read_loss(logits, read_ids)
        loss.backward()
        return loss.detach(), embeds

    def memory_setup() -> None:
        wrapped.reset_state()
        clear_grads(memory_params)

    def memory_check(loss: Tensor) -> None:
        assert_memory_written(wrapped)
        require_grads(memory_groups, "deltamem")
        wrapped.reset_state()

    def memory_graph_check(loss: Tensor) -> None:  # the graph phase leaves the captured state in place
        assert_memory_written(wrapped)
        require_grads(memory_groups, "deltamem (graph)")

    def lora_check(_: Tensor) -> None:
        require_grads({"LoRA": lora_params}, "lora")

    def frozen_check(out: tuple[Tensor, Tensor]) -> None:
        loss, embeds = out
        if not bool(torch.isfinite(loss)) or embeds.grad is None or not bool((embeds.grad != 0).any()):
            raise AssertionError("frozen: the backward pass produced no input gradient")

    variants = [
        Variant("frozen", frozen_step, check=frozen_check, tokens=B * (W + R)),
        Variant(
            "lora",
            lora_step,
            setup=lambda: clear_grads(lora_params),
            check=lora_check,
            tokens=B * (W + R),
        ),
        Variant("deltamem", memory_step, setup=memory_setup, check=memory_check, tokens=B * (W + R)),
    ]
    stats = measure_interleaved(variants, args.reps, args.warmup, setup.device)
    ratios = [("deltamem", "frozen"), ("lora", "frozen"), ("deltamem", "lora")]
    cases = [case(f"B={B} write={W} read={R}", {"batch": B, "write": W, "read": R}, stats, ratios)]
    profiles = {cases[0]["name"]: kernel_profile(variants, setup.device, ratios)} if args.profile else {}
    graph_errors: dict[str, str] = {}
    if args.graph:
        capturable = variants
        if setup.memory_config.write == "ssw":
            graph_errors["deltamem"] = "SSW segment writes read device values on the host (torch.unique)"
            capturable = [v for v in variants if v.name != "deltamem"]
        params = {"frozen": [], "lora": lora_params, "deltamem": memory_params}
        # the graph phase keeps the captured memory state in place (the eager check resets it)
        checks = {"deltamem": memory_graph_check}
        cases.append(graph_case(cases[0], capturable, params, checks, graph_errors, args, setup.device))
    results = {
        "benchmark": "train_step",
        "env": environment(setup.device, "benchmarks/train_step.py", argv),
        "args": arguments(args),
        "backbone": {"name": setup.spec.name, "loaded_from": setup.loaded_from, "dtype": setup.spec.dtype},
        "memory": setup.memory_config.to_dict(),
        "trainable_parameters": {
            "deltamem": sum(p.numel() for p in memory_params),
            "lora": sum(p.numel() for p in lora_params),
        },
        "cases": cases,
        "memory_written": all_checked(cases, "deltamem"),
    }
    if args.graph:
        results["graph_errors"] = graph_errors
    if profiles:
        results["profiles"] = profiles
    return report(results, args)


if __name__ == "__main__":
    main()
