"""Training throughput: optimiser-step time, tokens/s and peak memory per device, for multi-device runs.

Opt-in (`training.measure_throughput=true`) because it synchronises the device once per optimiser
step to time it. Token counts are summed on the device (no sync per micro-batch). At the end of
fit, every rank's figures are gathered and rank 0 writes `throughput.json`:

    {"world_size": 2, "optimizer_steps_timed": 3, "step_seconds_median": ..., "tokens_per_second": ...,
     "tokens_per_step": ..., "peak_memory_gib_per_device": [..], "device_names": [..]}

The first `warmup_steps` optimiser steps are excluded (allocator growth, kernel autotuning).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ThroughputRecorder(L.Callback):
    """Times optimiser steps (all ranks) and writes `throughput.json` from rank 0."""

    def __init__(self, path: Path, warmup_steps: int = 1):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.path, self.warmup_steps = Path(path), warmup_steps
        self.step_seconds: list[float] = []
        self._tokens: Tensor | None = None  # () long, tokens of the timed steps on this rank
        self._pending: Tensor | None = None  # () long, tokens of the step in progress
        self._started: float | None = None
        self._first_step = self._last_step = -1

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(module.device)
        self._first_step = self._last_step = trainer.global_step  # where the loop (re)starts
        _sync(module.device)
        self._started = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, *args: Any) -> None:
        count = batch["write_attention_mask"].sum() + batch["read_attention_mask"].sum()  # () on the device
        self._pending = count if self._pending is None else self._pending + count

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self._last_step:  # still accumulating
            return
        _sync(module.device)
        now = time.perf_counter()
        completed = trainer.global_step
        if completed - self._first_step > self.warmup_steps and self._started is not None:
            self.step_seconds.append(now - self._started)
            self._tokens = self._pending if self._tokens is None else self._tokens + self._pending
        self._pending, self._started, self._last_step = None, now, completed

    def summary(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        device = module.device
        tokens = self._tokens if self._tokens is not None else torch.zeros((), dtype=torch.long, device=device)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        local = torch.tensor([float(tokens), peak, sum(self.step_seconds)], device=device, dtype=torch.float64)
        gathered = trainer.strategy.all_gather(local)  # (world, 3), or (3,) on one device
        rows = gathered.reshape(-1, 3).tolist()
        steps = len(self.step_seconds)
        seconds = statistics.median(self.step_seconds) if steps else float("nan")
        total_tokens = sum(row[0] for row in rows)
        return {
            "world_size": trainer.world_size,
            "optimizer_steps_timed": steps,
            "warmup_steps_excluded": self.warmup_steps,
            "step_seconds_median": seconds,
            "step_seconds": self.step_seconds,
            "tokens_per_step": total_tokens / steps if steps else float("nan"),
            "tokens_per_second": total_tokens / max(row[2] for row in rows) if steps else float("nan"),
            "peak_memory_gib_per_device": [row[1] for row in rows],
            "device_names": [torch.cuda.get_device_name(device)] * trainer.world_size
            if device.type == "cuda"
            else ["cpu"] * trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
        }

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        result = self.summary(trainer, module)
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(result, indent=2) + "\n")
