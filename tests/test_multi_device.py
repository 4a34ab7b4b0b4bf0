"""Data parallel training through Lightning's DDP on CPU: two processes = one process, same global batch.

Runs `src/run.py task=train` as a subprocess (Lightning's DDP launcher re-executes the command for
rank 1), once with `trainer=ddp` on 2 CPU processes × 1 episode and once on 1 process × 2
accumulated episodes; the exported adapters must agree. Sharded evaluation is covered in
test_eval_runner.py (two ranks merge to the unsharded predictions).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT

COMMON = [
    "task=train",
    "~experiment",
    "train_data.num_episodes=8",
    "training.batch_size=1",
    "training.global_batch_size=2",
    "training.optim.lr=5e-3",
    "training.progress_bar=none",
    "trainer.max_epochs=1",
    "logger=none",
]


def train_run(out, *overrides: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{REPO_ROOT}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "src/run.py", *COMMON, f"paths.output_dir={out}", *overrides],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_ddp_two_cpu_processes_equal_one_process_with_accumulation(tmp_path):
    train_run(tmp_path / "one", "trainer.devices=1")
    ddp = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
    ]
    train_run(tmp_path / "two", *ddp)
    one = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    two = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=key)
    assert (tmp_path / "two" / "train_result.json").is_file()  # exported once, by rank 0
