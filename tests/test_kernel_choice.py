"""Kernel choice is configuration (`kernels:`), the DELTAMEM_* variables override it, and what ran is
recorded (`effective()` in run_info.json and results.json)."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import tiny_training_cfg

from deltamem import kernel_choice
from deltamem.kernels.affine_chain import use_two_levels
from deltamem.kernels.chunk_scan import prefer_parallel
from deltamem.train import train

VARIABLES = ("DELTAMEM_TRITON_SCAN", "DELTAMEM_SCAN_PARALLEL", "DELTAMEM_CHAIN_GROUPS", "DELTAMEM_FUSED_ACTIVATE",
             "DELTAMEM_FUSED_DECODE")  # fmt: skip


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    kernel_choice.reset()
    yield
    kernel_choice.reset()


def test_configuration_then_environment():
    cpu = torch.device("cpu")
    assert not prefer_parallel(8, 512, cpu) and not use_two_levels(10, 8)  # auto on the CPU / few chunks
    kernel_choice.configure(scan_family="chunks", chain="two_levels", fused_decode=False)
    assert prefer_parallel(8, 512, cpu) and use_two_levels(10, 8)
    assert kernel_choice.effective()["scan_family"] == {"value": "chunks", "source": "config"}
    assert kernel_choice.effective()["fused_decode"] == {"value": False, "source": "config"}


def test_the_environment_overrides_and_is_recorded(monkeypatch):
    kernel_choice.configure(scan_family="chunks")
    monkeypatch.setenv("DELTAMEM_SCAN_PARALLEL", "0")
    assert not prefer_parallel(8, 512, torch.device("cpu"))
    assert kernel_choice.effective()["scan_family"] == {"value": "rows", "source": "DELTAMEM_SCAN_PARALLEL"}
    monkeypatch.setenv("DELTAMEM_CHAIN_GROUPS", "sometimes")
    with pytest.raises(ValueError, match="DELTAMEM_CHAIN_GROUPS must be one of"):
        use_two_levels(10, 8)


def test_bad_choices_are_refused():
    with pytest.raises(
        ValueError, match=r"kernels.scan_family='diagonal': expected one of \['auto', 'rows', 'chunks'\]"
    ):
        kernel_choice.configure(scan_family="diagonal")
    with pytest.raises(ValueError, match="kernels.warp_speed: unknown kernel choice"):
        kernel_choice.configure(warp_speed=True)


def test_training_records_the_kernels_it_ran_with(tmp_path):
    cfg = tiny_training_cfg(tmp_path, "~experiment", "train_data.num_episodes=2", "trainer.max_steps=1",
                            "kernels.scan_family=rows")  # fmt: skip
    train(cfg)
    recorded = json.loads((tmp_path / "run_info.json").read_text())["kernels"]
    assert recorded["scan_family"] == {"value": "rows", "source": "config"} and recorded["triton_scan"]["value"] is True
