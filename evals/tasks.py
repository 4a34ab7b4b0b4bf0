"""Hydra tasks of the evaluation side: `task=eval` and `task=table`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evals.runner import EvalRunner, Shard, provenance
from evals.tables import build_tables


def rank_device(rank: int, local_rank: str | None, visible: int) -> int:
    """The GPU of an evaluation rank: LOCAL_RANK when a launcher set it (torchrun), else the rank
    modulo the visible GPUs (RANK / WORLD_SIZE set by hand, possibly several ranks per GPU)."""
    index = int(local_rank) if local_rank is not None else rank
    return index % max(1, visible)


def evaluate(
    cfg: DictConfig,
    conditions: Sequence[str] | None = None,
    limit: int | None = None,
    questions_per_call: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """`python src/run.py task=eval benchmark=<b> method=<m> [adapter=<folder>] [task.conditions=[...]]`."""
    from deltamem.backbones import load_backbone

    shard = Shard.from_env()
    if shard.world_size > 1 and torch.cuda.is_available():  # ranks spread over the visible GPUs
        torch.cuda.set_device(rank_device(shard.rank, os.environ.get("LOCAL_RANK"), torch.cuda.device_count()))
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    benchmark = instantiate(cfg.benchmark.loader)
    loaded = load_backbone(instantiate(cfg.backbone))
    method = instantiate(cfg.method)(loaded=loaded)
    chosen = list(conditions) if conditions is not None else list(cfg.benchmark.conditions)
    info = {
        "backbone": {"name": loaded.spec.name, "hub_id": loaded.spec.hub_id, "loaded_from": loaded.loaded_from},
        "decoding_note": "per-item settings from the benchmark's protocol (see predictions.jsonl `seed`)",
        "limit": limit,
        **provenance(),
    }
    if shard.rank == 0:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    runner = EvalRunner(benchmark, method, chosen, run_dir, limit, questions_per_call, shard, progress, info)
    results = runner.run()
    if results:
        print(json.dumps({c: round(v["overall"], 2) for c, v in results["conditions"].items()}))
        for logger_cfg in (cfg.get("logger") or {}).values():
            _log_results(logger_cfg, cfg, results, run_dir)
    return results


def _log_results(logger_cfg: DictConfig, cfg: DictConfig, results: dict[str, Any], run_dir: Path) -> None:
    """Mirror the scalars and the table into the configured Lightning logger (W&B or CSV)."""
    logger = instantiate(logger_cfg)
    scalars = {}
    for condition, summary in results["conditions"].items():
        prefix = f"eval/{results['benchmark']}/{condition}"
        scalars[f"{prefix}/overall"] = summary["overall"]
        for category, values in summary.get("per_category", {}).items():
            for key, value in values.items():
                if isinstance(value, (int, float)) and key != "n":
                    scalars[f"{prefix}/{category}/{key}"] = value
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    logger.log_metrics(scalars, step=0)
    if type(logger).__name__ == "WandbLogger":
        markdown, _ = build_tables([run_dir])
        logger.log_text(key="eval/table", columns=["markdown"], data=[[markdown]])
        logger.experiment.finish()
    else:
        logger.save()


def table(cfg: DictConfig, runs: Sequence[str] = (), out: str | None = None) -> str:
    """`python src/run.py task=table task.runs=[dir1,dir2,...] [task.out=docs/table]` → Markdown + CSV."""
    if not runs:
        raise ValueError("task=table needs run directories: task.runs=[outputs/...,outputs/...]")
    markdown, csv_text = build_tables([Path(r) for r in runs])
    print(markdown)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.md").write_text(markdown + "\n")
        Path(f"{out}.csv").write_text(csv_text)
    return markdown
