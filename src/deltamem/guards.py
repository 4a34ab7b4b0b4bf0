"""Training never goes on silently with non-finite gradients.

`NonFiniteGuard` checks the memory's gradients after every backward pass (one device sync per
micro-batch: the finiteness of the accumulated gradient norms). When a micro-batch makes them
non-finite it writes, under `<run>/nonfinite/`, what is needed to replay it: the micro-batch's
tensors and the memory parameters as they were before the step (`step<k>_batch<i>.pt`), and one
JSON line per event in `nonfinite.jsonl` (step, batch index, the parameters whose gradients broke,
the loss). Then, by `policy`:

* `error` (default) — stop with a message naming the step, the dump and how to replay it;
* `skip` — drop this optimiser step's accumulated gradients (the step updates nothing; AdamW skips
  parameters without gradients) and go on; the count lands in `train_result.json`;
* `off` — no check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from .errors import UserError

POLICIES = ("error", "skip", "off")


class NonFiniteGradientError(UserError, FloatingPointError):
    """A micro-batch made the memory's gradients non-finite (training.nonfinite=error)."""


class NonFiniteGuard(L.Callback):
    def __init__(self, run_dir: Path, policy: str = "error", max_dumps: int = 3):
        if policy not in POLICIES:
            raise ValueError(f"training.nonfinite must be one of {POLICIES}, got {policy!r}")
        self.run_dir, self.policy, self.max_dumps = Path(run_dir), policy, max_dumps
        self.events = 0
        self._batch: dict[str, Tensor] | None = None
        self._batch_idx = -1

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    def on_after_backward(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.policy == "off":
            return
        named = [(n, p) for n, p in module.model.memory_parameters() if p.grad is not None]
        if not named:
            return
        norms = torch.stack(torch._foreach_norm([p.grad for _, p in named]))  # (P,) on the device
        finite = torch.isfinite(norms)
        if bool(finite.all()):  # the one host sync per micro-batch
            return
        self.events += 1
        broken = [n for (n, _), ok in zip(named, finite.tolist()) if not ok]
        event = {
            "step": trainer.global_step,
            "batch_idx": self._batch_idx,
            "parameters": broken,
            "loss": _float(trainer.callback_metrics.get("train/loss")),
            "policy": self.policy,
        }
        dump = self._dump(trainer, module, event) if self.events <= self.max_dumps else None
        event["dump"] = None if dump is None else str(dump)
        if trainer.is_global_zero:
            with (self.run_dir / "nonfinite.jsonl").open("a") as handle:
                handle.write(json.dumps(event) + "\n")
        message = (
            f"non-finite memory gradients at optimiser step {event['step']} (micro-batch {event['batch_idx']}) "
            f"in {len(broken)} of {len(named)} parameters, first {broken[0]}"
        )
        if self.policy == "error":
            hint = f"; replay with scripts/gpu/nan_probe.py {dump}" if dump else ""
            raise NonFiniteGradientError(message + hint + " (training.nonfinite=skip drops such steps instead)")
        print(f"[deltamem] {message}: this step's gradients are dropped (training.nonfinite=skip)", file=sys.stderr)
        for _, param in module.model.memory_parameters():
            param.grad = None

    def state_dict(self) -> dict[str, Any]:  # the count continues across a resume (checkpointed)
        return {"events": self.events}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.events = int(state.get("events", 0))

    def _dump(self, trainer: L.Trainer, module: L.LightningModule, event: dict) -> Path | None:
        if not trainer.is_global_zero or self._batch is None:
            return None
        folder = self.run_dir / "nonfinite"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step{event['step']}_batch{event['batch_idx']}.pt"
        batch = {k: v.detach().cpu() for k, v in self._batch.items() if isinstance(v, Tensor)}
        memory = {n: p.detach().cpu().clone() for n, p in module.model.memory_parameters()}
        torch.save({"batch": batch, "memory": memory, "event": event}, path)
        return path


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


__all__ = ["NonFiniteGuard", "NonFiniteGradientError", "POLICIES"]
