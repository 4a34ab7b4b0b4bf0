"""Run the replication's jobs on one GPU machine as parallel lanes, within one device command.

    python scripts/gpu/lanes.py --budget 540 \
        "train tsw_lr1e-3 training.optim.lr=1e-3 | eval tsw_lr1e-3 episode_qa" \
        "eval frozen hotpotqa | eval frozen locomo"

Each argument is a lane: steps separated by `|`, run one after another; lanes run side by side
(several processes share the GPU: a 0.5B backbone leaves it mostly idle from one process).
Steps:
* `train NAME [override ...]` — `experiment=replication_qwen05` into `$RUNS/NAME` (skipped when
  `train_result.json` is there; a stopped run resumes from its checkpoint);
* `eval RUN BENCH [override ...]` — RUN `frozen` (or `frozen_<row>`) is the frozen backbone
  (`method=vanilla`), any other RUN is δ-mem with `$RUNS/RUN/adapter`, on the experiment and backbone
  it was trained with; BENCH is a key of `BENCHES` (its conditions and batch sizes below); into
  `$RUNS/RUN/eval_BENCH` (resumable: rerunning continues);
* `retrain RUN SUFFIX [override ...]` — RUN's training overrides plus these (e.g. `seed=1`), into
  `$RUNS/RUN_SUFFIX`.
The experiment is `$EXPERIMENT` and the backbone folder `$BACKBONE_PATH` unless a step's overrides
name others (`experiment=replication_smollm2 backbone.path=/root/smollm2_hf`: the small row).
RUN may be `best:A,B,C`: the arm the pre-registered rule selects from their dev results (highest
D = memory_only − memory_only_wrong_history F1 on `episode_qa`; within 1 point, the highest
memory_only), recorded in `$RUNS/selected.json`. A lane whose step cannot resolve yet stops there.
Every step gets the time left before the budget runs out (then it is stopped, and its run folder
resumes next time). At the end, the small files of every run (results, score vectors,
predictions, metrics, configs) go into `$OUT/runs.tgz`, each adapter into `$OUT/adapters/RUN/`,
the last checkpoint of each unfinished training run into `$OUT/checkpoints/RUN.ckpt.partN` (a fresh
machine resumes from them: `scripts/gpu/restore_partial.sh`), and a summary is printed.
Environment: `scripts/gpu/env.sh` (backbone folder, data, wheels).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds `evals`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evals import replication_selection  # noqa: E402

RUNS = Path(os.environ.get("RUNS", "/root/runs"))
LOGS = Path(os.environ.get("LOGS", "/root/logs"))
BACKBONE = os.environ.get("BACKBONE_PATH", "/root/qwen05_hf")
EXPERIMENT = os.environ.get("EXPERIMENT", "replication_qwen05")
KEEP = (
    "selected.json", "overrides.yaml", "results.json", "scores.jsonl", "predictions.jsonl", "train_result.json",
    "metrics.jsonl", "config.yaml", "run_info.json", "throughput.json", "nonfinite.jsonl", "fingerprint.json",
)

# The study's LoCoMo and IFEval runs (sessions 9-11) used the prompts and scorer that `protocol=paper`
# named until 2026-12-03, now `paper_v0`; every later row keeps them: the evaluation path stays the same.
V0 = "benchmark.loader.protocol=paper_v0"
# ... and the eager token loop that every earlier row decoded with, pinned even if the default moves
# to the CUDA-graph loop (`decoding.loop=auto`, checked token for token by benchmarks/eval_path.py).
EAGER = "decoding.loop=eager"
# benchmark key → (benchmark config, frozen conditions, δ-mem conditions, overrides)
BENCHES: dict[str, tuple[str, list[str], list[str], list[str]]] = {
    "episode_qa": ("episode_qa", ["no_context", "full_context"],
                   ["memory_only", "memory_only_wrong_history"],
                   ["method.batch_size=128", "task.questions_per_call=128"]),
    "hotpotqa": ("hotpotqa", ["no_context", "full_context"],
                 ["no_context", "full_context", "memory_only", "memory_only_wrong_history"],
                 ["method.batch_size=128", "task.questions_per_call=128"]),
    "locomo": ("locomo", ["no_context"], ["no_context", "memory_only", "memory_only_wrong_history"],
               [V0, "benchmark.loader.include_adversarial=true", "method.batch_size=256",
                "task.questions_per_call=256"]),
    "locomo_full": ("locomo", ["full_context"], ["full_context"],
                    [V0, "benchmark.loader.include_adversarial=true", "method.batch_size=64",
                     "task.questions_per_call=64"]),  # one call per conversation: none is packed
    "ifeval": ("ifeval", ["no_context"], ["no_context"], [V0, "method.batch_size=136", "task.questions_per_call=136"]),
}


def dev_scores(arm: str) -> tuple[float, float] | None:
    """(D, memory_only) of an arm under $RUNS on the dev split (evals/replication_selection.py)."""
    return replication_selection.dev_scores(RUNS / arm)


def select_best(arms: list[str]) -> str:
    """The pre-registered selection among `arms` (evals/replication_selection.py: highest dev D, ties
    within 1 point broken by dev memory_only). Arms without dev results are not candidates."""
    scored = {arm: s for arm in arms if (s := dev_scores(arm)) is not None}
    if not scored:
        raise RuntimeError(f"no arm of {arms} has dev results (eval ARM episode_qa) to select from")
    return replication_selection.select_arm(scored)


DEADLINE = float("inf")  # set by main: a `best:` step waits for the dev results until then
FAILED = "FAILED"  # marker a lane leaves in an arm's folder when one of its steps fails


def wait_for_dev(arms: list[str], poll_s: float = 10.0) -> None:
    """Until every arm has dev results or has failed (other lanes may still be evaluating them)."""
    while time.time() < DEADLINE - poll_s:
        if all(dev_scores(a) is not None or (RUNS / a / FAILED).exists() for a in arms):
            return
        time.sleep(poll_s)


def resolve(name: str) -> str:
    """`best:a,b,c` → the selected arm (written to $RUNS/selected.json), `best:a,b,c+s1` → that
    arm's `_s1` retraining; any other name as given."""
    if not name.startswith("best:"):
        return name
    name, _, suffix = name.partition("+")
    arms = name[len("best:") :].split(",")
    wait_for_dev(arms)
    chosen = select_best(arms)
    record = {"arms": {a: dev_scores(a) for a in arms}, "selected": chosen, "rule": "max D, ties by memory_only"}
    (RUNS / "selected.json").write_text(json.dumps(record, indent=1) + "\n")
    return f"{chosen}_{suffix}" if suffix else chosen


def training_overrides(arm: str) -> list[str]:
    """The overrides an arm was trained with (Hydra's .hydra/overrides.yaml), minus the run folder;
    its `experiment=` and `backbone.path=` included (the small row trains another backbone)."""
    import yaml

    saved = yaml.safe_load((RUNS / arm / ".hydra" / "overrides.yaml").read_text())
    return [o for o in saved if not o.startswith("hydra.run.dir=")]


def is_frozen(run: str) -> bool:
    """`frozen`, `frozen_<row>`: the backbone alone (method=vanilla), no adapter."""
    return run == "frozen" or run.startswith("frozen_")


def _base(*override_lists: list[str]) -> tuple[list[str], list[str]]:
    """(run.py with its experiment and backbone folder, the other overrides). The last `experiment=` /
    `backbone.path=` among the lists wins (Hydra refuses a key given twice); else $EXPERIMENT,
    $BACKBONE_PATH."""
    merged = [o for overrides in override_lists for o in overrides]

    def last(key: str, default: str) -> str:
        return next((o for o in reversed(merged) if o.startswith(key)), key + default)

    others = [o for o in merged if not o.startswith(("experiment=", "backbone.path="))]
    base = [sys.executable, "src/run.py", last("experiment=", EXPERIMENT), last("backbone.path=", BACKBONE)]
    return base, others


def command(step: list[str], resolve_names: bool = True) -> tuple[list[str], Path, Path]:
    """(argv, run folder, done marker) of one step (`best:` names resolved unless asked not to)."""
    kind, name, *rest = step
    if resolve_names:
        name = resolve(name)
    if kind == "train":
        run = RUNS / name
        base, overrides = _base(rest)
        return [*base, f"hydra.run.dir={run}", *overrides], run, run / "train_result.json"
    if kind == "retrain":  # retrain SRC SUFFIX [override ...]: SRC's overrides plus these, into SRC_SUFFIX
        suffix, *extra = rest
        run = RUNS / f"{name}_{suffix}"
        base, overrides = _base(training_overrides(name) if resolve_names else [], extra)
        return [*base, f"hydra.run.dir={run}", *overrides], run, run / "train_result.json"
    if kind == "eval":  # an arm is scored on the experiment and backbone it was trained with
        bench, *extra = rest
        config, frozen, memory, defaults = BENCHES[bench]
        run = RUNS / name / f"eval_{bench}"
        saved = RUNS / name / ".hydra" / "overrides.yaml"
        trained = [o for o in training_overrides(name) if o.startswith(("experiment=", "backbone.path="))] \
            if resolve_names and not is_frozen(name) and saved.is_file() else []
        base, overrides = _base(trained, extra)
        conditions = eval_conditions(name, bench)
        method = ["method=vanilla"] if is_frozen(name) else ["method=deltamem", f"adapter={RUNS / name / 'adapter'}"]
        argv = [*base, "task=eval", f"benchmark={config}", *method, f"task.conditions=[{','.join(conditions)}]",
                *defaults, EAGER, f"hydra.run.dir={run}", *overrides]
        return argv, run, run / "results.json"
    raise ValueError(f"unknown step kind {kind!r} in {' '.join(step)} (expected train, retrain or eval)")


def eval_conditions(run: str, bench: str) -> list[str]:
    """The conditions an `eval RUN BENCH` step scores: the frozen ones for `frozen*`, else δ-mem's."""
    _, frozen, memory, _ = BENCHES[bench]
    return frozen if is_frozen(run) else memory


def scored(results: Path, conditions: list[str]) -> bool:
    """Whether an eval step's results.json already holds every condition the step asks for (a
    finished evaluation is not rerun, so a code change since cannot refuse its folder)."""
    return set(conditions) <= set(json.loads(results.read_text()).get("conditions", {}))


def run_lane(index: int, steps: list[list[str]], deadline: float, report: list[str]) -> None:
    for step in steps:
        label = " ".join(step)
        try:
            argv, run, done = command(step)
        except (RuntimeError, FileNotFoundError) as error:  # e.g. no arm has dev results yet
            report.append(f"lane {index}: {label}: not started ({error})")
            return
        trains = step[0] in ("train", "retrain")
        if done.exists() and (trains or scored(done, eval_conditions(run.parent.name, step[2]))):
            report.append(f"lane {index}: {label}: already done")
            continue
        left = deadline - time.time()
        if left < 20:
            report.append(f"lane {index}: {label}: not started (budget spent)")
            return
        log = LOGS / (f"eval_{run.parent.name}_{step[2]}.log" if step[0] == "eval" else f"{step[0]}_{run.name}.log")
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
        collect(OUT)  # after every step: a command killed at the device's limit still returns this much
        if code != 0:
            tail = log.read_text(errors="replace").splitlines()[-6:]
            report.extend(f"    | {line[:200]}" for line in tail)
            if code != "timeout":
                arm = run if step[0] != "eval" else run.parent
                arm.mkdir(parents=True, exist_ok=True)
                (arm / FAILED).write_text(label + "\n")  # a `best:` step waiting on this arm stops waiting
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


OUT = Path(os.environ.get("OUT", "bench_out"))
COLLECTING = threading.Lock()  # lanes collect after each step; one archive at a time


def collect(out: Path) -> list[str]:
    """Archive the small files, copy adapters and checkpoints; returns what could not come back."""
    with COLLECTING:
        try:  # called from the lanes' threads: a failure to archive is reported, it stops no lane
            return _collect(out)
        except (OSError, tarfile.TarError) as error:
            print(f"collect failed: {error}", file=sys.stderr, flush=True)
            return [f"collect failed: {error}"]


def _collect(out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "runs.tgz.partial"  # renamed when complete: a kill mid-write leaves the last archive
    with tarfile.open(partial, "w:gz") as tar:
        for path in sorted(RUNS.rglob("*")):
            if path.is_file() and (path.name in KEEP or path.parent.name == "csv"):  # not the dumps (size)
                tar.add(path, arcname=str(path.relative_to(RUNS.parent)))
        for path in sorted(LOGS.glob("*.log")):
            tar.add(path, arcname=f"logs/{path.name}")
    os.replace(partial, out / "runs.tgz")
    # The trained adapters (a few MB each) come back as plain files beside the archive: a later
    # session on a fresh machine evaluates them without retraining.
    for adapter in sorted(RUNS.glob("*/adapter")):
        for path in adapter.iterdir():
            if path.is_file():
                target = out / "adapters" / adapter.parent.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    try:  # a failure here must not stop the lanes that called collect: it is reported instead
        return return_checkpoints(out)
    except OSError as error:
        return [f"checkpoints not returned: {error}"]


CHECKPOINT_MAX_BYTES = 16 * 2**20  # the device returns files of at most 16 MiB (device README, Limits)
OUT_MAX_FILES = 8  # ... at most 8 files in all
OUT_MAX_BYTES = 64 * 2**20  # ... and 64 MiB together


def return_checkpoints(out: Path) -> list[str]:
    """Copy the last checkpoint of every unfinished training run to `out/checkpoints/RUN.ckpt.partN`.

    A machine can be taken back between calls (session 12 lost three arms at steps 105-115 that
    way): with these files carried back, `restore_partial.sh` joins the parts and resumes the arms
    on a fresh machine. A checkpoint comes back in parts of at most 16 MiB (MSW's, about 50 MB, in
    four). A finished run's parts are removed (its adapter comes back instead). A checkpoint whose
    parts would pass the device's file count or 64 MiB in all stays behind; the skipped ones are
    returned as messages."""
    folder = out / "checkpoints"
    skipped = []
    kept = [p for p in out.rglob("*") if p.is_file() and folder not in p.parents]  # runs.tgz, adapters
    used, used_bytes = len(kept), sum(p.stat().st_size for p in kept)
    for ckpt in sorted(RUNS.glob("*/checkpoints/last.ckpt")):  # in name order, while the file count allows
        run = ckpt.parent.parent
        old = sorted(folder.glob(f"{run.name}.ckpt.part[0-9]*"))
        if (run / "train_result.json").exists():
            for part in old:
                part.unlink()
            continue
        size = ckpt.stat().st_size
        parts = max(1, -(-size // CHECKPOINT_MAX_BYTES))
        if used + parts > OUT_MAX_FILES or used_bytes + size > OUT_MAX_BYTES:
            skipped.append(f"{run.name}: checkpoint not returned ({size} bytes in {parts} parts, "
                           f"{used} files of {used_bytes} bytes already in $OUT)")
            for part in old:
                part.unlink()
            continue
        used, used_bytes = used + parts, used_bytes + size
        folder.mkdir(parents=True, exist_ok=True)
        for part in old:
            part.unlink()
        temporary = folder / f"{run.name}.tmp"  # each part is written here first: a kill mid-copy leaves
        # a part missing, never a torn one, and torch.load refuses the joined file
        with ckpt.open("rb") as source:
            for index in range(parts):
                temporary.write_bytes(source.read(CHECKPOINT_MAX_BYTES))
                os.replace(temporary, folder / f"{run.name}.ckpt.part{index}")
    return skipped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lanes", nargs="*", help="lanes: steps separated by |")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all lanes together")
    args = parser.parse_args(argv)
    RUNS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    global DEADLINE
    deadline = DEADLINE = time.time() + args.budget
    lanes = [[shlex.split(step) for step in lane.split("|") if step.strip()] for lane in args.lanes]
    for lane in lanes:
        for step in lane:
            command(step, resolve_names=False)  # fail on a malformed step before anything starts
    report: list[str] = []
    threads = [threading.Thread(target=run_lane, args=(i, lane, deadline, report)) for i, lane in enumerate(lanes)]
    finished = threading.Event()

    def collect_every(seconds: float = 90.0) -> None:  # training curves come back even from a killed command
        while not finished.wait(seconds):
            collect(OUT)

    threading.Thread(target=collect_every, daemon=True).start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished.set()
    print("\n".join(report))
    print("\n".join(summary()))
    print("\n".join(collect(OUT)))


if __name__ == "__main__":
    main()
