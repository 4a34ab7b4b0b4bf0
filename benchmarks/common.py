"""Shared pieces of the benchmarks: options, backbone loading, weight-sharing twins, the memory check.

Timing and reporting live in `benchmarks/timing.py`. Every script builds the backbone once and
derives the variants it compares from it with `twin`: a structural copy whose parameters and
buffers are the *same tensors*, so the frozen model, the δ-mem model and the LoRA model have
identical weights while the weights are held in memory only once (absolute peak memory is then
comparable across variants, and a 4B model fits three times over in one bf16 copy).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deltamem import DeltaMemConfig, DeltaMemModel, attach_memory
from deltamem.backbones import BackboneSpec, build_random, load_backbone
from deltamem.hf_compat import cache_argument, forward_accepts, returned_cache  # noqa: F401  (re-exported)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def int_list(text: str) -> list[int]:
    """`"1024,8192"` -> [1024, 8192] (an argparse type)."""
    return [int(part) for part in text.split(",") if part.strip()]


def base_parser(description: str) -> argparse.ArgumentParser:
    """Options every benchmark takes; scripts add their own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backbone", default="tiny", help="a conf/backbone/<NAME>.yaml (default tiny)")
    parser.add_argument("--random-init", action="store_true", help="random weights from the YAML architecture")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="override backbone.dtype")
    parser.add_argument("--device", help="override backbone.device (cpu, cuda, cuda:1, auto)")
    parser.add_argument("--memory", choices=["tsw", "ssw", "msw"], default="tsw", help="conf/memory group")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override, e.g. memory.scan_chunk_size=128 (repeatable)",
    )
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (interleaved)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds over all variants first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random token ids")
    parser.add_argument("--ssw-segment", type=int, default=256, help="tokens per segment when --memory ssw")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: leave as is)")
    parser.add_argument("--json", type=Path, help="also write the results JSON here")
    parser.add_argument(
        "--profile", action="store_true", help="after timing, profile one call of each variant (kernels, device ms)"
    )
    return parser


def compose_config(args: argparse.Namespace) -> tuple[BackboneSpec, DeltaMemConfig]:
    """Compose conf/config.yaml with the chosen backbone/memory and instantiate both.

    `~task` drops the default task (task=quickstart), whose settings (`backbone.device: cpu`,
    `dtype: float32`) would otherwise override the backbone's own YAML: a benchmark gets the
    backbone as its file states it, plus the options given here.
    """
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = ["~task", f"backbone={args.backbone}", f"memory={args.memory}"]
    if args.random_init:
        overrides.append("backbone.random_init=true")
    if args.dtype:
        overrides.append(f"backbone.dtype={args.dtype}")
    if args.device:
        overrides.append(f"backbone.device={args.device}")
    overrides += list(args.override)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return instantiate(cfg.backbone), instantiate(cfg.memory)


@dataclass
class Setup:
    spec: BackboneSpec
    memory_config: DeltaMemConfig
    model: nn.Module  # the frozen backbone, eval mode, no parameter requires grad
    device: torch.device
    loaded_from: str


def load_setup(args: argparse.Namespace) -> Setup:
    """The backbone named by the options, built once (random-init is seeded)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    spec, memory_config = compose_config(args)
    device = spec.resolved_device()
    start = time.perf_counter()
    print(
        f"[bench] building {spec.name} ({'random init' if spec.random_init else 'pretrained'}) on {device}",
        file=sys.stderr,
        flush=True,
    )
    if spec.random_init:
        model, origin = build_random(spec, device).eval(), "random_init"
        model.requires_grad_(False)
    else:
        loaded = load_backbone(spec)
        model, origin = loaded.model, loaded.loaded_from
    print(f"[bench] built in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    return Setup(spec, memory_config, model, device, origin)


def twin(model: nn.Module) -> nn.Module:
    """A deep copy of the module tree that shares every parameter and buffer with `model`.

    Wrapping the twin (δ-mem's CorrectedLinear, PEFT's LoRA layers) replaces modules of the twin
    only; the original stays the plain frozen model, and no weight is duplicated.
    """
    shared: dict[int, Any] = {id(p): p for p in model.parameters()}
    shared.update({id(b): b for b in model.buffers()})
    return copy.deepcopy(model, memo=shared)


def with_memory(setup: Setup) -> DeltaMemModel:
    """δ-mem attached to a weight-sharing twin of the backbone (the backbone itself stays frozen)."""
    wrapped = attach_memory(twin(setup.model), setup.memory_config)
    if any(type(m).__name__ == "CorrectedLinear" for m in setup.model.modules()):
        raise RuntimeError("attaching δ-mem to the twin changed the frozen backbone")
    return wrapped


def assert_memory_written(model: DeltaMemModel) -> None:
    """Raise unless every memory layer holds a finite state with a non-zero entry."""
    layers = model.get_state().layers
    if not layers:
        raise AssertionError("the model has no δ-mem layers")
    for index, state in layers.items():
        if state is None:
            raise AssertionError(f"δ-mem layer {index}: state is None (nothing was written)")
        if not bool(torch.isfinite(state).all()):
            raise AssertionError(f"δ-mem layer {index}: state holds non-finite values")
        if not bool((state != 0).any()):
            raise AssertionError(f"δ-mem layer {index}: state is all zeros (nothing was written)")


def segment_kwargs(
    config: DeltaMemConfig, batch: int, length: int, segment: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """`segment_ids` for SSW writes (consecutive segments of `segment` tokens); empty otherwise."""
    if config.write != "ssw":
        return {}
    ids = torch.arange(length, device=device) // max(1, segment)
    return {"segment_ids": ids.expand(batch, length)}


def random_ids(batch: int, length: int, vocab: int, device: torch.device, seed: int) -> torch.Tensor:
    """Random token ids (B, T), reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator).to(device)


def vocab_size(model: nn.Module) -> int:
    return int(model.get_input_embeddings().num_embeddings)


def supports_logits_to_keep(model: nn.Module) -> bool:
    return forward_accepts(model, "logits_to_keep")
