"""training.nonfinite: a micro-batch that makes the memory's gradients non-finite stops the run with
a replayable dump (`error`), or its step is dropped and counted (`skip`); nothing goes on silently."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from test_training import tiny_training_cfg

from deltamem.guards import NonFiniteGradientError, NonFiniteGuard
from deltamem.train import train

OVERRIDES = ["~experiment", "train_data.num_episodes=8", "training.global_batch_size=2", "trainer.max_epochs=1"]


class PoisonGradient(L.Callback):
    """Puts a NaN into one memory gradient after the backward of micro-batch `batch_idx` (runs before
    the guard: callbacks passed to `train` come first)."""

    def __init__(self, batch_idx: int):
        self.batch_idx, self._current = batch_idx, -1

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._current = batch_idx

    def on_after_backward(self, trainer, module):
        if self._current == self.batch_idx:
            name, param = next((n, p) for n, p in module.model.memory_parameters() if n.endswith("B_o"))
            param.grad[0, 0] = float("nan")


def test_error_policy_stops_and_dumps_a_replayable_micro_batch(tmp_path):
    cfg = tiny_training_cfg(tmp_path, *OVERRIDES)
    assert cfg.training.nonfinite == "error"
    with pytest.raises(NonFiniteGradientError, match=r"step 1 \(micro-batch 3\).*B_o.*nan_probe"):
        train(cfg, callbacks=[PoisonGradient(3)])
    event = json.loads((tmp_path / "nonfinite.jsonl").read_text())
    assert event["step"] == 1 and event["batch_idx"] == 3 and event["policy"] == "error"
    assert event["parameters"] == ["layers.0.B_o"]
    dump = torch.load(event["dump"], weights_only=True)
    assert {"write_input_ids", "read_input_ids", "labels"} <= set(dump["batch"])
    assert dump["batch"]["read_input_ids"].shape[0] == 1  # the micro-batch, batch_size 1
    assert all(torch.isfinite(p).all() for p in dump["memory"].values())  # parameters before the bad step
    assert not (tmp_path / "adapter").exists()


def test_skip_policy_drops_the_step_and_counts_it(tmp_path):
    result = train(tiny_training_cfg(tmp_path, *OVERRIDES, "training.nonfinite=skip"), callbacks=[PoisonGradient(2)])
    assert result["steps"] == 4 and result["nonfinite_microbatches"] == 1
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in adapter.values())
    assert json.loads((tmp_path / "nonfinite.jsonl").read_text())["batch_idx"] == 2


def test_a_clean_run_records_no_event(tmp_path):
    result = train(tiny_training_cfg(tmp_path, *OVERRIDES, "trainer.max_steps=2"))
    assert result["nonfinite_microbatches"] == 0 and not (tmp_path / "nonfinite.jsonl").exists()


def test_unknown_policy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="training.nonfinite must be one of"):
        NonFiniteGuard(tmp_path, "ignore")


def test_attention_backends_apply_to_the_training_step(tmp_path):
    """training.attention_backends restricts SDPA inside the step: `math` trains; `cudnn` alone has no
    CPU kernel, so the step fails (proof the restriction is in force); unknown names are refused."""
    result = train(
        tiny_training_cfg(tmp_path / "math", *OVERRIDES, "trainer.max_steps=1", "training.attention_backends=[math]")
    )
    assert result["steps"] == 1 and result["final_loss"] == result["final_loss"]
    with pytest.raises(RuntimeError, match="(?i)no (viable backend|available kernel)"):
        train(
            tiny_training_cfg(
                tmp_path / "cudnn", *OVERRIDES, "trainer.max_steps=1", "training.attention_backends=[cudnn]"
            )
        )
    with pytest.raises(ValueError, match="training.attention_backends: unknown"):
        train(
            tiny_training_cfg(tmp_path / "bad", *OVERRIDES, "trainer.max_steps=1", "training.attention_backends=[fast]")
        )
