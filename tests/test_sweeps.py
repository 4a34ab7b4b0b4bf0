"""conf/sweep: every study composes as a multirun with its sweeper parameters and a fixed sweep
folder; the smallest runs as a two-job multirun on the tiny backbone (each job trains, then scores
its adapter), and rerunning after losing a job finishes only that job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO_ROOT

SWEEPS = sorted(p.stem for p in (REPO_ROOT / "conf" / "sweep").glob("*.yaml"))
TINY = [  # a CPU-sized job: random tiny backbone, a few synthetic chats, one optimiser step
    "train_data.num_episodes=2",
    "training.batch_size=1",
    "training.global_batch_size=1",
    "training.max_write_length=64",
    "training.max_length=32",
    "trainer.max_steps=1",
    "training.progress_bar=none",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "benchmark.loader.num_episodes=2",
    "task.progress=false",
    "task.conditions=[memory_only]",
]


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_with_its_parameters(sweep):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"sweep={sweep}"], return_hydra_config=True)
    assert cfg.sweep_name == sweep and cfg.hydra.sweep.dir == f"multirun/{sweep}"
    assert cfg.hydra.sweeper.params, sweep
    if sweep == "paper_tables":  # evaluation only; its folders are named by Hydra's choices (at run time)
        assert cfg.task._target_ == "evals.tasks.evaluate"
        assert set(cfg.hydra.sweeper.params) == {"benchmark", "table_row"}
    elif sweep != "paper_training":  # (its folder is the experiment's name, set by the sweeper)
        assert cfg.hydra.sweep.subdir == cfg.job_subdir and cfg.job_name == f"{sweep}-{cfg.job_subdir}"
        assert cfg.task._target_ == "evals.tasks.train_then_evaluate"
        assert cfg.method._target_ == "evals.deltamem_method.DeltaMemMethod"


@pytest.mark.parametrize("row", sorted(p.stem for p in (REPO_ROOT / "conf" / "table_row").glob("*.yaml")))
def test_every_table_row_picks_its_method_and_settings(row):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["sweep=paper_tables", f"table_row={row}", "benchmark=hotpotqa"])
    module = {"vanilla": "evals.chat_method", "deltamem": "evals.deltamem_method"}.get(row, f"baselines.{row}")
    assert cfg.method._target_.rsplit(".", 1)[0] == module
    assert cfg.backbone.name == "smollm2_135m" and cfg.task._target_ == "evals.tasks.evaluate"
    if row == "memorybank":
        assert cfg.method.encoder == cfg.paper_tables.encoder
    if row == "memgen":
        from omegaconf import OmegaConf

        saved = OmegaConf.to_container(cfg.method, resolve=False)["save_to"]  # the job folder: known at run time
        assert cfg.method.fit_steps == 300 and saved == "${paths.output_dir}/memgen_weights"


def test_the_tables_sweep_runs_two_rows_and_resumes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    argv = [sys.executable, str(REPO_ROOT / "src" / "run.py"), "-m", "sweep=paper_tables", "backbone=tiny",
            "benchmark=synthetic", "table_row=vanilla,bm25_rag", "benchmark.loader.num_episodes=3",
            "'task.conditions=[no_context,memory_only]'", f"hydra.sweep.dir={tmp_path / 'tables'}"]
    argv[-2] = argv[-2].strip("'")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "tables").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["synthetic_bm25_rag", "synthetic_vanilla"]
    methods = {json.loads((tmp_path / "tables" / j / "results.json").read_text())["method"] for j in jobs}
    assert methods == {"vanilla", "bm25_rag"}
    rows = (tmp_path / "tables" / "synthetic_vanilla" / "predictions.jsonl").read_text()
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "tables" / "synthetic_vanilla" / "predictions.jsonl").read_text() == rows  # nothing redone


def run_sweep(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    argv = [sys.executable, str(REPO_ROOT / "src" / "run.py"), "-m", "sweep=ablation_alpha", "memory.alpha=8,16",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY, *overrides]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def wandb_overrides(tmp_path, monkeypatch) -> list[str]:
    """logger=wandb offline when wandb is installed (its files under tmp_path), else no logger."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        return []
    from wandb_offline import offline_env

    offline_env(monkeypatch, tmp_path / "wandb_env")  # the jobs inherit the environment
    return ["logger=wandb", "logger.wandb.offline=true"]


def check_wandb_runs(sweep, jobs: dict[str, float]) -> None:
    """Each job is one W&B run (training, then its scores joining it under the same id): named after
    the sweep and its folder, in the group of the sweep folder, with its α in the config."""
    from wandb_offline import offline_runs

    from deltamem.run_logs import stable_run_id

    for job, alpha in jobs.items():
        (trained,) = offline_runs(sweep / job / "wandb")
        scored = offline_runs(sweep / job / "eval" / "wandb")[-1]
        results = json.loads((sweep / job / "eval" / "results.json").read_text())
        for run in (trained, scored):
            assert (run.run_id, run.group) == (stable_run_id(sweep / job), str(sweep))
            assert run.name == f"ablation_alpha-{job}"
            assert run.config["memory"]["alpha"] == alpha and run.config["sweep_name"] == "ablation_alpha"
        assert "train/loss" in trained.history_keys()
        overall = results["conditions"]["memory_only"]["overall"]
        assert scored.summary["synthetic/memory_only/overall"] == pytest.approx(overall)
        assert "synthetic/predictions" in scored.summary


def test_a_two_job_sweep_trains_scores_and_resumes_only_the_missing_job(tmp_path, monkeypatch):
    logger = wandb_overrides(tmp_path, monkeypatch)
    done = run_sweep(tmp_path, *logger)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["alpha=16", "alpha=8"]
    first, second = (tmp_path / "sweep" / job for job in jobs)
    for job in (first, second):
        summary = json.loads((job / "train_eval.json").read_text())
        assert summary["train"]["steps"] == 1 and "memory_only" in summary["eval"]
        assert json.loads((job / "eval" / "results.json").read_text())["method"].startswith("deltamem")
    if logger:
        check_wandb_runs(tmp_path / "sweep", {"alpha=16": 16, "alpha=8": 8})
    kept = (first / "train_result.json").stat().st_mtime_ns
    import shutil

    shutil.rmtree(second)  # the job a killed sweep never finished
    again = run_sweep(tmp_path, *logger)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (first / "train_result.json").stat().st_mtime_ns == kept  # not trained again
    assert "already trained" in again.stderr
    assert json.loads((second / "train_eval.json").read_text())["train"]["steps"] == 1
    if logger:  # the kept job logged no second training; the redone one is one W&B run again
        check_wandb_runs(tmp_path / "sweep", {"alpha=16": 16, "alpha=8": 8})


def wandb_of_job(*overrides: str) -> dict:
    """The W&B settings of a sweep job's config, resolved as in the job (`${hydra:...}` set)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "logger=wandb"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        return {**OmegaConf.to_container(cfg.logger.wandb, resolve=True), "job_name": cfg.job_name}
    finally:
        HydraConfig.instance().cfg = None  # other tests compose without Hydra running


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_job_names_its_wandb_run_after_the_sweep_and_groups_by_the_sweep_folder(sweep):
    job = wandb_of_job(f"sweep={sweep}", "table_row=vanilla", "experiment=tsw_qwen4b")
    assert job["group"] == f"multirun/{sweep}" and job["name"] == job["job_name"]
    assert job["name"].startswith(f"{sweep}-")
    moved = wandb_of_job(f"sweep={sweep}", "hydra.sweep.dir=/runs/b", "experiment=tsw_qwen4b")
    assert moved["group"] == "/runs/b"  # another folder of the same sweep: another group


def test_a_sweep_job_names_its_wandb_run_after_the_sweep_and_its_folder():
    rank = wandb_of_job("sweep=ablation_rank", "memory.rank=4")
    targets = wandb_of_job("sweep=ablation_targets", "memory.targets=[q,o]")
    tables = wandb_of_job("sweep=paper_tables", "benchmark=hotpotqa", "table_row=bm25_rag")
    assert (rank["name"], rank["group"]) == ("ablation_rank-rank=4", "multirun/ablation_rank")
    assert targets["name"] == "ablation_targets-targets=qo"
    assert tables["name"] == "paper_tables-hotpotqa_bm25_rag"  # the job's name, not task=eval's own


BANDS = [("all", range(24)), ("lower_third", range(8)), ("upper_third", range(16, 24))]


@pytest.mark.parametrize("band, expected", BANDS)
def test_the_depth_sweep_names_each_band_and_resolves_it_on_the_backbone(band, expected):
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["sweep=ablation_depth", f"memory.layers={band}"])
        sweep = compose("config", overrides=["sweep=ablation_depth"], return_hydra_config=True)
    assert sweep.hydra.sweeper.params == {"memory.layers": "all,lower_third,middle_third,upper_third"}
    wandb = wandb_of_job("sweep=ablation_depth", f"memory.layers={band}")
    assert (wandb["name"], wandb["group"]) == (f"ablation_depth-layers={band}", "multirun/ablation_depth")
    assert instantiate(cfg.memory).layer_indices(24) == tuple(expected)  # Qwen2.5-Coder-0.5B's 24 layers


def test_a_depth_job_trains_and_scores_the_memory_of_its_third_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    argv = [sys.executable, str(REPO_ROOT / "src" / "run.py"), "-m", "sweep=ablation_depth",
            "memory.layers=upper_third", "backbone.architecture.num_hidden_layers=3",  # tiny has 2: no thirds
            f"hydra.sweep.dir={tmp_path / 'depth'}", *TINY]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    job = tmp_path / "depth" / "layers=upper_third"
    assert json.loads((job / "adapter" / "adapter_config.json").read_text())["memory"]["layers"] == [2]
    assert "memory_only" in json.loads((job / "eval" / "results.json").read_text())["conditions"]

