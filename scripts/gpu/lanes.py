"""Run the replication's jobs on one GPU machine as parallel lanes, within one device command.

    python scripts/gpu/lanes.py --budget 540 \
        "train tsw_lr1e-3 training.optim.lr=1e-3 | eval tsw_lr1e-3 episode_qa" \
        "eval frozen hotpotqa | eval frozen locomo"

Each argument is a lane: steps separated by `|`, run one after another; lanes run side by side
(several processes share the GPU: a 0.5B backbone leaves it mostly idle from one process).
Steps:
* `train NAME [override ...]` — `experiment=replication_qwen05` into `$RUNS/NAME` (skipped when
  `train_result.json` is there; a stopped run resumes from its checkpoint);
* `eval RUN BENCH [override ...]` — RUN `frozen` is the frozen backbone (`method=vanilla`), any
  other RUN is δ-mem with `$RUNS/RUN/adapter`; BENCH is a key of `BENCHES` (its conditions and batch
  sizes below); into `$RUNS/RUN/eval_BENCH` (resumable: rerunning continues).
Every step gets the time left before the budget runs out (then it is stopped, and its run folder
resumes next time). At the end, the small files of every run (results, score vectors,
predictions, metrics, configs; no adapters or checkpoints) go into `$OUT/runs.tgz`, and a summary
is printed. Environment: `scripts/gpu/env.sh` (backbone folder, data, wheels).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

RUNS = Path(os.environ.get("RUNS", "/root/runs"))
LOGS = Path(os.environ.get("LOGS", "/root/logs"))
BACKBONE = os.environ.get("BACKBONE_PATH", "/root/qwen05_hf")
EXPERIMENT = os.environ.get("EXPERIMENT", "replication_qwen05")
KEEP = ("results.json", "scores.jsonl", "predictions.jsonl", "train_result.json", "metrics.jsonl", "config.yaml",
        "run_info.json", "throughput.json", "nonfinite.jsonl")

# benchmark key → (benchmark config, frozen conditions, δ-mem conditions, overrides)
BENCHES: dict[str, tuple[str, list[str], list[str], list[str]]] = {
    "episode_qa": ("episode_qa", ["no_context", "full_context"],
                   ["memory_only", "memory_only_wrong_history"],
                   ["method.batch_size=128", "task.questions_per_call=128"]),
    "hotpotqa": ("hotpotqa", ["no_context", "full_context"],
                 ["no_context", "full_context", "memory_only", "memory_only_wrong_history"],
                 ["method.batch_size=128", "task.questions_per_call=128"]),
    "locomo": ("locomo", ["no_context"], ["no_context", "memory_only", "memory_only_wrong_history"],
               ["benchmark.loader.include_adversarial=true", "method.batch_size=256", "task.questions_per_call=256"]),
    "locomo_full": ("locomo", ["full_context"], ["full_context"],
                    ["benchmark.loader.include_adversarial=true", "method.batch_size=64",
                     "task.questions_per_call=64"]),  # one call per conversation: none is packed
    "ifeval": ("ifeval", ["no_context"], ["no_context"], ["method.batch_size=136", "task.questions_per_call=136"]),
}


def command(step: list[str]) -> tuple[list[str], Path, Path]:
    """(argv, run folder, done marker) of one step."""
    kind, name, *rest = step
    base = [sys.executable, "src/run.py", f"experiment={EXPERIMENT}", f"backbone.path={BACKBONE}"]
    if kind == "train":
        run = RUNS / name
        return [*base, f"hydra.run.dir={run}", *rest], run, run / "train_result.json"
    if kind == "eval":
        bench, *overrides = rest
        config, frozen, memory, defaults = BENCHES[bench]
        run = RUNS / name / f"eval_{bench}"
        conditions = frozen if name == "frozen" else memory
        method = ["method=vanilla"] if name == "frozen" else ["method=deltamem", f"adapter={RUNS / name / 'adapter'}"]
        argv = [*base, "task=eval", f"benchmark={config}", *method, f"task.conditions=[{','.join(conditions)}]",
                *defaults, f"hydra.run.dir={run}", *overrides]
        return argv, run, run / "results.json"
    raise ValueError(f"unknown step kind {kind!r} in {' '.join(step)} (expected train or eval)")


def run_lane(index: int, steps: list[list[str]], deadline: float, report: list[str]) -> None:
    for step in steps:
        argv, run, done = command(step)
        label = " ".join(step)
        if done.exists() and step[0] == "train":
            report.append(f"lane {index}: {label}: already done")
            continue
        left = deadline - time.time()
        if left < 20:
            report.append(f"lane {index}: {label}: not started (budget spent)")
            return
        log = LOGS / f"{'_'.join(step[:2] if step[0] == 'train' else step[:3])}.log"
        started = time.time()
        with log.open("a") as handle:
            handle.write(f"\n$ {shlex.join(argv)}\n")
            handle.flush()
            try:
                code = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, timeout=left).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        seconds = time.time() - started
        report.append(f"lane {index}: {label}: exit {code} in {seconds:.0f} s")
        if code != 0:
            tail = log.read_text(errors="replace").splitlines()[-6:]
            report.extend(f"    | {line[:200]}" for line in tail)
            if code != "timeout":
                return  # a failed step: later steps of the lane depend on it


def summary() -> list[str]:
    lines = []
    for result in sorted(RUNS.glob("*/train_result.json")):
        data = json.loads(result.read_text())
        lines.append(f"{result.parent.name}: train {data.get('steps')} steps, {data.get('seconds', 0):.0f} s, "
                     f"loss(last 50 logged) {data.get('loss_mean_last_50_logged', float('nan')):.4f}")
    for result in sorted(RUNS.glob("*/eval_*/results.json")):
        data = json.loads(result.read_text())
        scores = {c: round(v["overall"], 2) for c, v in data.get("conditions", {}).items()}
        wall = data.get("timing", {}).get("wall_seconds_this_process")
        lines.append(f"{result.parent.parent.name}/{result.parent.name}: {scores} ({wall} s)")
    return lines


def collect(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "runs.tgz", "w:gz") as tar:
        for path in sorted(RUNS.rglob("*")):
            if path.is_file() and (path.name in KEEP or path.parent.name == "csv"):  # not the dumps (size)
                tar.add(path, arcname=str(path.relative_to(RUNS.parent)))
        for path in sorted(LOGS.glob("*.log")):
            tar.add(path, arcname=f"logs/{path.name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lanes", nargs="*", help="lanes: steps separated by |")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all lanes together")
    args = parser.parse_args(argv)
    RUNS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    lanes = [[shlex.split(step) for step in lane.split("|") if step.strip()] for lane in args.lanes]
    for lane in lanes:
        for step in lane:
            command(step)  # fail on a malformed step before anything starts
    report: list[str] = []
    threads = [threading.Thread(target=run_lane, args=(i, lane, deadline, report)) for i, lane in enumerate(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("\n".join(report))
    print("\n".join(summary()))
    collect(Path(os.environ.get("OUT", "bench_out")))


if __name__ == "__main__":
    main()
