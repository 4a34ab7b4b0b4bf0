"""Training logs that continue across a resume instead of restarting or repeating.

A run killed after checkpoint k and resumed redoes the steps after k. Both logs keep one record per
optimiser step: the rows the killed process wrote after the checkpoint are dropped when the resumed
process writes its first row.

* `MetricsJsonl` — `metrics.jsonl`, one JSON line per logged optimiser step (every
  `trainer.log_every_n_steps`; reading metrics synchronises with the device).
* `ContinuingCSVLogger` — Lightning's CSVLogger, whose writer deletes an existing `metrics.csv`;
  this one keeps the file and, on its first write, drops the rows at or after the first new step.
* `stable_run_id(run_dir)` — the logger run id of a run folder (W&B `id`): the same folder, so a
  resumed run, continues one logger run instead of starting a second.
* `route_lightning_logs()` — Lightning's INFO lines once, through the root logger (so Hydra's console
  and `run.log` get them), without its advertisement for litlogger.
* `TrainingClock` — training seconds summed over every process of a resumed run (saved in the
  checkpoint: the time a killed process spent after its last checkpoint is redone, so not counted).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger


def keep_rows_before(path: Path, step: int) -> None:
    """Rewrite a metrics JSONL file without the rows whose step is ≥ `step` (atomic)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("step", -1) < step]
    if len(kept) != len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)


class MetricsJsonl(L.Callback):
    def __init__(self, path: Path):
        self.path = Path(path)
        self._last_step = -1

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """A resumed run (global step k > 0) has logged step k already; later rows will be redone."""
        if trainer.global_step > 0 and trainer.is_global_zero:
            keep_rows_before(self.path, trainer.global_step + 1)
            self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._last_step or step % max(1, trainer.log_every_n_steps):
            return
        self._last_step = step
        row = {"step": step, "epoch": trainer.current_epoch, "time": time.time()}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


class _NoAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def route_lightning_logs() -> None:
    """When the root logger has handlers (Hydra set them up), drop Lightning's own console handler,
    which printed every line a second time, and filter out its litlogger tip."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):  # where it is logged
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvert) for f in logger.filters):
            logger.addFilter(_NoAdvert())
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def stable_run_id(run_dir: Path) -> str:
    """16 hex digits from the run folder's absolute path."""
    import hashlib

    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def instantiate_logger(node: Any, run_dir: Path) -> Any:
    """A logger from its config; a config with `id: null` gets the run folder's stable id."""
    from hydra.utils import instantiate

    if "id" in node and node.get("id") is None:
        return instantiate(node, id=stable_run_id(run_dir))
    return instantiate(node)


class TrainingClock(L.Callback):
    """Seconds of `fit` across resumes: `total()` = the checkpointed seconds of earlier processes
    plus this process's; `segments` counts the processes that trained this run."""

    def __init__(self) -> None:
        self.before, self.segments, self._start = 0.0, 1, time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def total(self) -> float:
        return self.before + time.perf_counter() - self._start

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.total(), "segments": self.segments}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.before, self.segments = float(state["seconds"]), int(state["segments"]) + 1
        self._start = time.perf_counter()


class ContinuingCSVLogger(CSVLogger):
    """CSVLogger that continues `metrics.csv` across a resume (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._trimmed = False

    @property
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        header, rows = _read_csv(path) if path.is_file() else (None, [])  # before the writer deletes it
        writer = super().experiment
        if header is not None:
            _write_csv(path, header, rows)
            writer.metrics_keys = list(header)
        return writer

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self._trimmed and step is not None:
            self._trimmed = True
            self._drop_from(step)
        super().log_metrics(metrics, step)

    def _drop_from(self, step: int) -> None:
        path = Path(self.experiment.metrics_file_path)
        if not path.is_file():
            return
        header, rows = _read_csv(path)
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) != len(rows):
            _write_csv(path, header, kept)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        out = csv.DictWriter(handle, fieldnames=header)
        out.writeheader()
        out.writerows(rows)


__all__ = [
    "ContinuingCSVLogger", "MetricsJsonl", "TrainingClock", "instantiate_logger", "keep_rows_before",
    "route_lightning_logs", "stable_run_id",
]
