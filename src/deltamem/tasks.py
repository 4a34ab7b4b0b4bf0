"""Tasks that `src/run.py` dispatches to (selected by the `task/` config group)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .attach import attach_memory
from .backbones import BackboneSpec, build_random, load_backbone


def say(text: str) -> None:
    """A task's summary for the person running it: through logging when Hydra has set it up (the
    console and the run folder's `run.log`), else printed."""
    if logging.getLogger().handlers:
        logging.getLogger("deltamem").info(text)
    else:
        print(text)


def attach_report(cfg: DictConfig, meta_device: bool = False) -> dict:
    """Attach δ-mem to `cfg.backbone`, print the wrapped modules and parameter counts.

    With `meta_device` the backbone is built from its architecture on the meta device: exact
    counts for a full-size model without allocating (or downloading) any weight.
    """
    spec: BackboneSpec = instantiate(cfg.backbone)
    memory_config = instantiate(cfg.memory)
    if meta_device:
        model, origin = build_random(spec, device="meta"), "random_init(meta)"
    else:
        loaded = load_backbone(spec)
        model, origin = loaded.model, loaded.loaded_from
    wrapped = attach_memory(model, memory_config)
    summary = wrapped.parameter_summary()
    print(
        f"backbone {spec.name} ({origin}) + δ-mem {memory_config.write.upper()} "
        f"r={memory_config.rank} H={memory_config.num_state_heads} targets={list(memory_config.targets)}"
    )
    print(f"wrapped {len(summary.wrapped_modules)} projections in {len(wrapped.memory_layers)} layers:")
    for name in summary.wrapped_modules[:4]:
        print(f"  {name}")
    if len(summary.wrapped_modules) > 4:
        print(f"  ... {summary.wrapped_modules[-1]}")
    print(summary)
    report = {
        "backbone": spec.name,
        "loaded_from": origin,
        "memory": memory_config.to_dict(),
        "trainable_parameters": summary.trainable,
        "frozen_parameters": summary.frozen,
        "wrapped_modules": summary.wrapped_modules,
    }
    out_dir = Path(OmegaConf.select(cfg, "paths.output_dir", default=".") or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "attach_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
