"""scripts/gpu/lanes.py: the pre-registered dev selection (`best:`), retraining a selected arm with
another seed, and the commands the steps become (no GPU: the steps are not run)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO_ROOT


@pytest.fixture
def lanes(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    spec = importlib.util.spec_from_file_location("lanes", REPO_ROOT / "scripts" / "gpu" / "lanes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dev(lanes, arm: str, memory_only: float, wrong: float) -> None:
    folder = lanes.RUNS / arm / "eval_episode_qa"
    folder.mkdir(parents=True)
    conditions = {"memory_only": {"overall": memory_only}, "memory_only_wrong_history": {"overall": wrong}}
    (folder / "results.json").write_text(json.dumps({"conditions": conditions}))


def test_selection_follows_the_preregistered_rule(lanes):
    dev(lanes, "a", 20.0, 15.0)  # D 5.0
    dev(lanes, "b", 30.0, 25.5)  # D 4.5: a tie with a (within 1 point), higher memory_only
    dev(lanes, "c", 40.0, 38.0)  # D 2.0
    assert lanes.select_best(["a", "b", "c", "missing"]) == "b"
    assert lanes.select_best(["a", "c"]) == "a"
    with pytest.raises(RuntimeError, match="no arm"):
        lanes.select_best(["missing"])
    argv, run, done = lanes.command(["eval", "best:a,b,c", "hotpotqa"])
    assert run == lanes.RUNS / "b" / "eval_hotpotqa" and f"adapter={lanes.RUNS / 'b' / 'adapter'}" in argv
    assert json.loads((lanes.RUNS / "selected.json").read_text())["selected"] == "b"


def test_retrain_inherits_the_arms_overrides(lanes):
    hydra = lanes.RUNS / "b" / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "overrides.yaml").write_text(
        "- experiment=replication_qwen05\n- backbone.path=/x\n- hydra.run.dir=/r/b\n"
        "- memory=msw\n- training.optim.lr=1e-3\n"
    )
    dev(lanes, "b", 30.0, 20.0)
    argv, run, done = lanes.command(["retrain", "best:b", "s1", "seed=1"])
    assert run == lanes.RUNS / "b_s1" and done == run / "train_result.json"
    assert argv[-3:] == ["memory=msw", "training.optim.lr=1e-3", "seed=1"]
    assert f"hydra.run.dir={run}" in argv and "hydra.run.dir=/r/b" not in argv
    assert argv[2:4] == ["experiment=replication_qwen05", "backbone.path=/x"]  # the arm's, each given once
    assert sum(a.startswith(("experiment=", "backbone.path=")) for a in argv) == 2
    small = lanes.command(["retrain", "best:b", "s135", "experiment=replication_smollm2", "backbone.path=/s"])[0]
    assert small[2:4] == ["experiment=replication_smollm2", "backbone.path=/s"]  # the step's own win
    assert small[-2:] == ["memory=msw", "training.optim.lr=1e-3"]
    assert lanes.command(["retrain", "best:b", "s1"], resolve_names=False)[1] == lanes.RUNS / "best:b_s1"


def test_best_waits_for_every_arm_or_its_failure_and_takes_a_suffix(lanes, monkeypatch):
    dev(lanes, "a", 20.0, 10.0)
    (lanes.RUNS / "b").mkdir(parents=True)
    slept = []

    def later(seconds):  # arm b's lane fails while `best:` waits
        slept.append(seconds)
        (lanes.RUNS / "b" / lanes.FAILED).write_text("train b\n")

    monkeypatch.setattr(lanes.time, "sleep", later)
    assert lanes.resolve("best:a,b+s1") == "a_s1" and len(slept) == 1


def test_collect_keeps_small_files_and_returns_adapters_apart(lanes, tmp_path, monkeypatch):
    monkeypatch.setattr(lanes, "LOGS", tmp_path / "logs")
    lanes.LOGS.mkdir()
    (lanes.LOGS / "train_a.log").write_text("log\n")
    arm = lanes.RUNS / "tsw_a"
    (arm / "adapter").mkdir(parents=True)
    (arm / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (arm / "adapter" / "adapter_config.json").write_text("{}")
    (arm / "checkpoints").mkdir()
    (arm / "checkpoints" / "last.ckpt").write_bytes(b"big")
    (arm / "train_result.json").write_text("{}")
    out = tmp_path / "out"
    lanes.collect(out)
    import tarfile

    with tarfile.open(out / "runs.tgz") as tar:
        names = sorted(tar.getnames())
    assert names == ["logs/train_a.log", "runs/tsw_a/train_result.json"]
    assert (out / "adapters" / "tsw_a" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in (out / "adapters" / "tsw_a").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]


def test_a_finished_evaluation_is_not_rerun(lanes):
    argv, run, done = lanes.command(["eval", "tsw_a", "hotpotqa"])
    run.mkdir(parents=True)
    done.write_text(json.dumps({"conditions": {"no_context": {}, "full_context": {}, "memory_only": {}}}))
    conditions = lanes.eval_conditions("tsw_a", "hotpotqa")
    assert f"task.conditions=[{','.join(conditions)}]" in argv  # what the step runs is what is checked
    assert not lanes.scored(done, conditions)  # memory_only_wrong_history is missing
    done.write_text(json.dumps({"conditions": {c: {} for c in lanes.BENCHES["hotpotqa"][2]}}))
    assert lanes.scored(done, conditions)


def test_locomo_steps_keep_the_studys_protocol(lanes):
    """The study's LoCoMo and IFEval rows all use the prompts and scorer `paper` named before 2026-12-03."""
    for bench in ("locomo", "locomo_full", "ifeval"):
        argv, _, _ = lanes.command(["eval", "frozen", bench])
        assert "benchmark.loader.protocol=paper_v0" in argv
    argv, _, _ = lanes.command(["eval", "frozen", "hotpotqa"])
    assert not any(a.startswith("benchmark.loader.protocol=") for a in argv)  # HotpotQA: official, the default
    for bench in lanes.BENCHES:  # every row decodes with the loop the study's first rows used
        assert "decoding.loop=eager" in lanes.command(["eval", "tsw_a", bench])[0]


def test_unfinished_training_returns_its_checkpoint_within_the_devices_limits(lanes, tmp_path, monkeypatch):
    """A machine taken back between calls loses what stays on it: an unfinished run's last.ckpt
    comes back as $OUT/checkpoints/RUN.ckpt.partN (parts within the device's file size); a finished
    run's does not; one whose parts would pass the device's file count is named instead."""
    monkeypatch.setattr(lanes, "LOGS", tmp_path / "logs")
    lanes.LOGS.mkdir()
    for name, size in (("tsw_a", 10), ("ssw_b", 12), ("msw_c", 45)):
        (lanes.RUNS / name / "checkpoints").mkdir(parents=True)
        (lanes.RUNS / name / "checkpoints" / "last.ckpt").write_bytes(bytes(range(size)))
    monkeypatch.setattr(lanes, "CHECKPOINT_MAX_BYTES", 20)
    out = tmp_path / "out"
    assert lanes.collect(out) == []
    parts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert parts == ["msw_c.ckpt.part0", "msw_c.ckpt.part1", "msw_c.ckpt.part2", "ssw_b.ckpt.part0", "tsw_a.ckpt.part0"]
    joined = b"".join((out / "checkpoints" / f"msw_c.ckpt.part{i}").read_bytes() for i in range(3))
    assert joined == bytes(range(45)) and len((out / "checkpoints" / "msw_c.ckpt.part0").read_bytes()) == 20
    (lanes.RUNS / "tsw_a" / "train_result.json").write_text("{}")  # finished since the last collect
    lanes.collect(out)
    assert not (out / "checkpoints" / "tsw_a.ckpt.part0").exists()
    monkeypatch.setattr(lanes, "OUT_MAX_FILES", 4)  # runs.tgz + 3 parts: ssw_b no longer fits after msw_c
    skipped = lanes.collect(out)
    assert len(skipped) == 1 and skipped[0].startswith("ssw_b: checkpoint not returned (12 bytes in 1 parts")
    assert not (out / "checkpoints" / "ssw_b.ckpt.part0").exists()
    assert (out / "checkpoints" / "msw_c.ckpt.part2").exists()
    monkeypatch.setattr(lanes, "OUT_MAX_FILES", 8)
    monkeypatch.setattr(lanes, "OUT_MAX_BYTES", (out / "runs.tgz").stat().st_size + 50)  # 45 + 12 bytes do not fit
    assert [m.split(":")[0] for m in lanes.collect(out)] == ["ssw_b"]


def test_a_fresh_machine_resumes_from_the_returned_files(lanes, tmp_path, monkeypatch):
    """restore_partial.sh puts a returned runs.tgz and RUN.ckpt back where `train RUN` resumes."""
    import subprocess

    import torch

    monkeypatch.setattr(lanes, "LOGS", tmp_path / "logs")
    lanes.LOGS.mkdir()
    run = lanes.RUNS / "tsw_a"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 110, "padding": torch.arange(64)}, run / "checkpoints" / "last.ckpt")
    monkeypatch.setattr(lanes, "CHECKPOINT_MAX_BYTES", 300)  # in several parts, joined again on restore
    (run / "metrics.jsonl").write_text('{"step": 110}\n')
    out = tmp_path / "out"
    assert lanes.collect(out) == []
    fresh = tmp_path / "fresh"
    env = {**__import__("os").environ, "RUNS": str(fresh / "runs"), "LOGS": str(fresh / "logs")}
    script = REPO_ROOT / "scripts" / "gpu" / "restore_partial.sh"
    done = subprocess.run(["bash", str(script), str(out / "runs.tgz"), str(out / "checkpoints")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    assert "tsw_a: resumes from 110 steps" in done.stdout
    assert (fresh / "runs" / "tsw_a" / "metrics.jsonl").read_text() == '{"step": 110}\n'
    assert torch.load(fresh / "runs" / "tsw_a" / "checkpoints" / "last.ckpt")["global_step"] == 110


@pytest.mark.parametrize("phase", ["tsw", "variants", "e3", "seeds", "search", "rerun1", "rerun2", "final", "small"])
def test_every_phase_of_the_lane_script_is_made_of_valid_steps(lanes, phase):
    import shlex
    import subprocess

    script = REPO_ROOT / "scripts" / "gpu" / "replication_lanes.sh"
    env = {"DRY_RUN": "1", "PATH": "/usr/bin:/bin"}
    printed = subprocess.run(["bash", str(script), phase, "1"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    steps = [shlex.split(step) for lane in printed for step in lane.split("|")]
    assert printed and all(steps)
    for step in steps:
        lanes.command(step, resolve_names=False)  # an unknown kind or benchmark raises
    if phase.startswith("rerun"):  # every arm trains, then scores dev and both test benchmarks
        arms = [lane for lane in printed if lane.startswith("train ")]
        assert len(arms) == 3 and [len(lane.split("|")) for lane in arms] == [4, 4, 4]
        assert all(lane.split("|")[1].split()[2] == "episode_qa" for lane in arms)


def test_the_small_row_trains_and_is_scored_on_its_own_backbone(lanes):
    small = ["experiment=replication_smollm2", "backbone.path=/root/smollm2_hf"]
    argv, run, _ = lanes.command(["train", "tsw_s135", *small, "training.optim.lr=1e-3"])
    assert argv[2:4] == small and argv[-1] == "training.optim.lr=1e-3"
    hydra = run / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*small, f"hydra.run.dir={run}"]))
    argv, _, _ = lanes.command(["eval", "tsw_s135", "hotpotqa"])  # the backbone it was trained on
    assert argv[2:4] == small and "method=deltamem" in argv
    argv, _, _ = lanes.command(["eval", "frozen_smollm2", "hotpotqa", *small])
    assert argv[2:4] == small and "method=vanilla" in argv
    assert lanes.eval_conditions("frozen_smollm2", "hotpotqa") == ["no_context", "full_context"]
    argv, _, _ = lanes.command(["eval", "frozen", "hotpotqa"])  # the default row: $EXPERIMENT, $BACKBONE_PATH
    assert argv[2:4] == [f"experiment={lanes.EXPERIMENT}", f"backbone.path={lanes.BACKBONE}"]


def test_committed_results_restore_where_selection_and_retraining_read_them(lanes, tmp_path):
    """restore_runs.sh without adapters: `best:` selects from the committed dev results and
    `retrain` inherits the committed overrides."""
    import subprocess

    committed = tmp_path / "results" / "s13"
    for arm, memory_only in (("tsw_a", 20.0), ("msw_b", 30.0)):
        (committed / arm / "eval_episode_qa").mkdir(parents=True)
        conditions = {"memory_only": {"overall": memory_only}, "memory_only_wrong_history": {"overall": 10.0}}
        (committed / arm / "eval_episode_qa" / "results.json").write_text(json.dumps({"conditions": conditions}))
        (committed / arm / "overrides.yaml").write_text(f"- experiment=replication_qwen05\n- memory={arm[:3]}\n")
    env = {**__import__("os").environ, "RUNS": str(lanes.RUNS), "LOGS": str(tmp_path / "logs")}
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu" / "restore_runs.sh"), str(committed)],
                   cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    argv, run, _ = lanes.command(["retrain", "best:tsw_a,msw_b", "s1", "seed=1"])
    assert run == lanes.RUNS / "msw_b_s1" and argv[-2:] == ["memory=msw", "seed=1"]


def test_a_failure_to_return_checkpoints_is_reported_not_raised(lanes, tmp_path, monkeypatch):
    monkeypatch.setattr(lanes, "LOGS", tmp_path / "logs")
    lanes.LOGS.mkdir()
    (lanes.RUNS / "tsw_a" / "checkpoints").mkdir(parents=True)
    (lanes.RUNS / "tsw_a" / "checkpoints" / "last.ckpt").write_bytes(b"x")

    def full_disk(out):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lanes, "return_checkpoints", full_disk)
    assert lanes.collect(tmp_path / "out") == ["checkpoints not returned: [Errno 28] No space left on device"]
    assert (tmp_path / "out" / "runs.tgz").is_file()  # the small files still came back
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    assert lanes.collect(blocked)[0].startswith("collect failed:")  # reported, not raised into a lane
