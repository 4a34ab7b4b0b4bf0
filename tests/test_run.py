"""The Hydra entry point composes every backbone × memory and runs the attach task."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra.utils import instantiate

from deltamem.config import DeltaMemConfig
from deltamem.tasks import attach_report

from conftest import REPO_ROOT
from test_param_counts import compose_cfg

BACKBONES = ["qwen3_4b", "qwen3_8b", "smollm3_3b", "smollm2_135m", "tiny"]


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("memory", ["tsw", "ssw", "msw"])
def test_every_backbone_and_memory_composes(backbone, memory):
    cfg = compose_cfg(f"backbone={backbone}", f"memory={memory}")
    config = instantiate(cfg.memory)
    assert isinstance(config, DeltaMemConfig) and config.write == memory
    assert config.num_state_heads == (4 if memory == "msw" else 1)
    spec = instantiate(cfg.backbone)
    assert spec.name == backbone and spec.architecture["model_type"] in ("qwen3", "llama", "smollm3")


def test_attach_task_reports_counts_on_meta_device(tmp_path):
    cfg = compose_cfg("backbone=qwen3_4b", "memory=msw", f"paths.output_dir={tmp_path}")
    report = attach_report(cfg, meta_device=True)
    assert report["trainable_parameters"] == 19_465_344
    assert len(report["wrapped_modules"]) == 72
    assert json.loads((tmp_path / "attach_report.json").read_text())["trainable_parameters"] == 19_465_344


def test_entry_point_runs_the_attach_task(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "src" / "run.py"), "~experiment", "task=attach", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trainable 6,160" in result.stdout
    assert (tmp_path / "attach_report.json").is_file()


def test_unknown_backbone_is_named(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "src" / "run.py"), "backbone=qwen9_99b", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Could not find 'backbone/qwen9_99b'" in result.stderr
    assert "qwen3_4b" in result.stderr  # the available options are listed


def readme_commands() -> list[list[str]]:
    """The overrides of every `src/run.py` command in the README's Commands block."""
    import shlex

    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():  # a command continued over lines is one line
        if "src/run.py" not in line:
            continue
        words = shlex.split(line.split(" #")[0].split("src/run.py", 1)[1])
        commands.append([w for w in words if w != "-m"])
    return commands


def test_every_readme_command_composes_as_written_and_eval_gets_no_quickstart_settings():
    from conftest import compose_config

    commands = readme_commands()
    assert len(commands) >= 15 and [] in commands  # `python src/run.py` itself
    for overrides in commands:
        sweep_free = [o.split(",")[0] if "=" in o and "[" not in o else o for o in overrides]  # -m: first value
        cfg = compose_config(*sweep_free, "task=quickstart") if not overrides else compose_config(*sweep_free)
        if "task=eval" in overrides:
            assert cfg.get("experiment_name") is None and "sessions" not in cfg.benchmark.loader, overrides
            assert cfg.backbone.name == next((o.split("=")[1] for o in overrides if o.startswith("backbone=")), "tiny")
    default = compose_config("task=quickstart")
    assert default.experiment_name == "quickstart" and default.backbone.name == "smollm2_135m"


@pytest.mark.parametrize("debug", sorted(p.stem for p in (REPO_ROOT / "conf" / "debug").glob("*.yaml")))
@pytest.mark.parametrize("source", sorted(p.stem for p in (REPO_ROOT / "conf" / "train_data").glob("*.yaml")))
def test_every_debug_config_fits_every_train_data_source(debug, source):
    """Each composed train_data node's keys are all parameters of its class (no `unexpected keyword`)."""
    import inspect

    from hydra.utils import get_class

    from conftest import compose_config

    cfg = compose_config("task=train", f"debug={debug}", f"train_data={source}")
    node = cfg.train_data
    target = get_class(node._target_)
    parameters = inspect.signature(target).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = [k for k in node if not k.startswith("_") and k not in parameters]
        assert unknown == [], (source, unknown)


def test_the_quickstart_settings_win_over_the_base_config():
    """task=quickstart's values (a global package) are not overridden by conf/config.yaml's own: the
    default run trains with its batch of 4, not the base's 1 × 32 accumulation."""
    from conftest import compose_config

    cfg = compose_config("task=quickstart")
    assert (cfg.training.batch_size, cfg.training.global_batch_size) == (4, 4)
    assert cfg.training.optim.lr == 1e-2 and cfg.training.max_write_length == 256
    assert cfg.train_data.num_episodes == 600 and cfg.benchmark.loader.num_episodes == 32
    bare = compose_config("task=train")
    assert (bare.training.batch_size, bare.training.global_batch_size) == (1, 32)
