"""`task=train`: train δ-mem on episodes with Lightning, export the adapter in both formats.

The run directory (Hydra's output dir) is the source of truth: `config.yaml` (resolved),
`run_info.json` (git SHA, package versions, parameter counts), `metrics.jsonl`, `checkpoints/`
(adapter + optimiser state; `last.ckpt` is picked up again when the same run dir is reused),
`adapter/` (ours) and `adapter_release/` (the public release's format).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import kernel_choice
from .adapters import load_adapter, save_adapter, save_release_adapter
from .attach import DeltaMemModel, attach_memory
from .backbones import BackboneSpec, LoadedBackbone, load_backbone
from .episodes import EpisodeBuilder
from .errors import UserError
from .guards import NonFiniteGuard
from .lightning import DataPositionCheck, DeltaMemLightning, EpisodeDataModule, OptimConfig, fsdp_root
from .run_logs import MetricsJsonl, TrainingClock, instantiate_logger, route_lightning_logs
from .throughput import ThroughputRecorder


def recent_mean(path: Path, key: str, rows: int) -> float:
    """Mean of `key` over the last `rows` lines of a metrics JSONL file that carry it (NaN if none):
    a steadier end-of-run figure than the last step's loss, across resumed runs too."""
    if not path.exists():
        return float("nan")
    tail = [row[key] for row in map(json.loads, path.read_text().splitlines()) if key in row][-rows:]
    return sum(tail) / len(tail) if tail else float("nan")


SAME_RUN_SECTIONS = ("backbone", "memory", "train_data", "training", "seed")


class FinishedRunMismatchError(UserError, RuntimeError):
    """The run folder holds a finished training run with other settings."""


def finished_run(run_dir: Path, cfg: DictConfig) -> dict | None:
    """The saved summary when `run_dir` holds a finished run of the same settings (None when it holds
    no finished run, or `training.resume` is off); another finished run is refused."""
    done, saved = run_dir / "train_result.json", run_dir / "config.yaml"
    if not done.is_file() or not saved.is_file() or not cfg.training.get("resume", True):
        return None
    before = OmegaConf.load(saved)
    for key in SAME_RUN_SECTIONS:
        old, new = OmegaConf.select(before, key), OmegaConf.select(cfg, key)
        old = OmegaConf.to_container(old, resolve=True) if OmegaConf.is_config(old) else old
        new = OmegaConf.to_container(new, resolve=True) if OmegaConf.is_config(new) else new
        if old != new:
            raise FinishedRunMismatchError(
                f"{run_dir} holds a finished training run with other `{key}` settings: use another folder "
                f"(hydra.run.dir=...), or delete {done} to train again"
            )
    result = json.loads(done.read_text())
    print(f"[deltamem] {run_dir}: already trained ({result.get('steps')} steps); nothing to do", file=sys.stderr)
    return {**result, "skipped": True}


def accumulation_steps(global_batch_size: int, per_device_batch_size: int, world_size: int) -> int:
    """Gradient accumulation that makes per-device batch × devices × accumulation = the global batch."""
    per_step = per_device_batch_size * world_size
    if global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by batch_size={per_device_batch_size} × "
            f"{world_size} device(s)"
        )
    return global_batch_size // per_step


def full_parameters(trainer: L.Trainer) -> contextlib.AbstractContextManager:
    """Every rank enters it: under FSDP the memory's parameters are gathered from their shards (a
    collective), elsewhere (single device, DDP, ZeRO-2) they are already whole on every rank."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    root = fsdp_root(trainer)
    return contextlib.nullcontext() if root is None else FSDP.summon_full_params(root, writeback=False)


def run_info(loaded: LoadedBackbone, model: DeltaMemModel) -> dict[str, Any]:
    try:
        sha = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        sha = None
    import transformers

    summary = model.parameter_summary()
    return {
        "git_sha": sha,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": L.__version__,
        "backbone": loaded.spec.name,
        "loaded_from": loaded.loaded_from,
        "trainable_parameters": summary.trainable,
        "frozen_parameters": summary.frozen,
        "kernels": kernel_choice.effective(),
    }


def bind_local_device() -> None:
    """Each process of a multi-GPU run loads the backbone onto its own GPU: Lightning's launcher sets
    LOCAL_RANK in the processes it starts, and `backbone.device=cuda` means the current device.
    (FSDP refuses a module that sits on another rank's GPU; DDP and DeepSpeed would move it.)"""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and torch.cuda.is_available():
        torch.cuda.set_device(int(local_rank))


def load_training_backbone(cfg: DictConfig) -> LoadedBackbone:
    """The frozen backbone of `cfg.backbone`, on this process's device, with its tokenizer."""
    spec: BackboneSpec = instantiate(cfg.backbone)
    bind_local_device()
    loaded = load_backbone(spec)
    if loaded.tokenizer is None:
        raise ValueError(f"backbone {spec.name} has no tokenizer; training needs one (set backbone.tokenizer)")
    return loaded


def attach_seeded(cfg: DictConfig, loaded: LoadedBackbone) -> DeltaMemModel:
    """`cfg.memory` attached to the backbone, initialised under `cfg.seed`."""
    torch.manual_seed(cfg.seed)  # the memory's initialisation is part of the run: seeded, so a rerun is identical
    return attach_memory(loaded.model, instantiate(cfg.memory))


def build_model(cfg: DictConfig) -> tuple[LoadedBackbone, DeltaMemModel]:
    loaded = load_training_backbone(cfg)
    return loaded, attach_seeded(cfg, loaded)


def train(
    cfg: DictConfig,
    loaded: LoadedBackbone | None = None,
    model: DeltaMemModel | None = None,
    callbacks: list[L.Callback] | None = None,
) -> dict:
    """Fit the memory on `cfg.train_data`; returns a summary (final loss, adapter paths, timings).
    `loaded`/`model` reuse an already built backbone; `callbacks` are added to the trainer's."""
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen backbone
    # Lightning looks for state_dict on the loader; the data module carries the position instead
    # (EpisodeDataModule.state_dict, checked by DataPositionCheck), so a mid-epoch resume is exact
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    route_lightning_logs()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    finished = finished_run(run_dir, cfg)
    if finished is not None:  # rerunning a finished run (a resumed sweep) does not train it again
        if model is not None:  # the caller's model gets the trained memory, as if it had trained
            load_adapter(model, run_dir / "adapter")
        return finished
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    kernel_choice.configure(**(cfg.get("kernels") or {}))
    if loaded is None or model is None:
        loaded, model = build_model(cfg)
    t = cfg.training
    builder = EpisodeBuilder(
        loaded.tokenizer, t.max_write_length, t.max_length, dict(loaded.spec.chat_template_kwargs), t.write_overflow
    )
    records = instantiate(cfg.train_data)
    data = EpisodeDataModule(
        records, builder, t.batch_size, model.memory_config.segment_unit, cfg.seed, int(t.get("num_workers", 0))
    )
    module = DeltaMemLightning(
        model, OptimConfig(**t.optim), t.sparsity_weight, t.sparsity_target, t.get("attention_backends")
    )

    loggers = [instantiate_logger(c, run_dir) for c in (cfg.get("logger") or {}).values()]
    checkpoint_dir = run_dir / "checkpoints"
    guard = NonFiniteGuard(run_dir, t.get("nonfinite", "error"))
    clock = TrainingClock()
    callbacks = [
        *(callbacks or []),
        guard,
        clock,
        DataPositionCheck(),
        L.pytorch.callbacks.ModelCheckpoint(
            dirpath=checkpoint_dir, save_last=True, every_n_train_steps=t.checkpoint_every, save_top_k=0
        ),
        MetricsJsonl(run_dir / "metrics.jsonl"),
    ]
    if t.get("measure_throughput", False):
        callbacks.append(
            ThroughputRecorder(run_dir / "throughput.json", warmup_steps=t.get("throughput_warmup_steps", 1))
        )
    if t.progress_bar == "rich":
        callbacks.append(L.pytorch.callbacks.RichProgressBar(leave=True))
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
    )
    # the global batch is fixed; accumulation follows from the devices Lightning actually runs on
    trainer.accumulate_grad_batches = accumulation_steps(t.global_batch_size, t.batch_size, trainer.world_size)
    if trainer.is_global_zero:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (run_dir / "run_info.json").write_text(json.dumps(run_info(loaded, model), indent=2) + "\n")
        for logger in loggers:
            logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), **run_info(loaded, model)})
    resume = checkpoint_dir / "last.ckpt"  # a file, or a directory of shards under DeepSpeed
    device = next(model.parameters()).device
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=str(resume) if t.resume and resume.exists() else None)
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,  # this process
        "seconds_total": clock.total(),  # every process of a resumed run, up to its checkpoints
        "segments": clock.segments,
        "steps": trainer.global_step,
        "final_loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
        "nonfinite_microbatches": guard.events,  # dropped steps under training.nonfinite=skip (all segments)
    }
    with full_parameters(trainer):
        if trainer.is_global_zero:  # one writer; the adapter is exported from rank 0
            result["loss_mean_last_50_logged"] = recent_mean(run_dir / "metrics.jsonl", "train/loss", 50)
            result["adapter"] = str(save_adapter(model, run_dir / "adapter"))
            result["adapter_release"] = str(save_release_adapter(model, run_dir / "adapter_release"))
            (run_dir / "train_result.json").write_text(json.dumps(result, indent=2) + "\n")
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()  # one W&B run per multirun job
    model.to(device)  # Lightning's teardown leaves the module on the CPU; callers evaluate where it trained
    return result
