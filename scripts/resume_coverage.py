"""How much of its epoch a resumed training run saw, from its committed `metrics.jsonl` alone.

Until 2026-12-04, a run resumed with loader workers (`training.num_workers > 0`) restarted its data
order at sample 0: the workers took their first indices before Lightning restored the loop
(`deltamem.lightning.ResumableSampler`). This script finds each run's resumes (a gap between two
logged steps longer than `--gap` × the median), takes the step logged before the gap as the
checkpoint the run resumed from, and reports:

* `segments`: optimiser steps run between resumes; under the old behaviour each segment replays
  the data order from its start, so the run saw the first `max(segments)` steps' batches only
  (`unique_fraction` of the epoch) and the earliest ones `repeats` times;
* `replay_check`: evidence for the replay. Per-batch losses depend mostly on the batch, so a run's
  loss at step s after a resume at c is compared (Pearson r) with a reference run's loss at step
  s − c (the same batch if the order restarted) and at step s (the same batch if it continued).
  The reference must share the seed and the data and run uninterrupted over those steps;
* `peer_checks` (`--peers`): for two runs with the same data that resumed at different steps
  c_a and c_b, the losses at the same step after both resumes line up at offset 0 if the data order
  continued (both at batch s), and at offset c_a − c_b if it restarted (a's step s then holds batch
  s − c_a, which b met at its step s − c_a + c_b). It needs no uninterrupted reference, so it tests
  runs trained after the fix, for which "saw" above is only what the old behaviour would have given.

    python scripts/resume_coverage.py results/2026-12-03_h200_s1*/*/ \
        --reference results/2026-12-04_h200_s12/tsw_lr2e-3 --out coverage.json
    python scripts/resume_coverage.py results/2026-12-04_h200_s13/*/ --peers --out peers.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def losses(run: Path) -> dict[int, tuple[float, float]]:
    """step → (wall time, training loss) of every logged step."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: (r["time"], r["train/loss"]) for r in rows if "train/loss" in r}


def resumes(curve: dict[int, tuple[float, float]], gap: float) -> list[int]:
    """The checkpoint steps a run resumed from: the logged step before each long gap."""
    steps = sorted(curve)
    waits = [curve[b][0] - curve[a][0] for a, b in zip(steps, steps[1:])]
    median = statistics.median(waits)
    return [a for a, w in zip(steps, waits) if w > gap * median]


def pearson(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    den = (sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys)) ** 0.5
    return num / den


def replay_check(curve: dict, points: list[int], end: int, reference: dict, skip_early: int) -> dict:
    """Pearson r between the losses after the first resume (at c) and the reference's losses at
    offset c (the same batches, if the order restarted), against every other offset (a multiple of
    5, at least 4 pairs): a restarted order lines up at offset c alone. Reference steps before
    `skip_early` are left out (there the untrained model's loss, not the batch, sets the value)."""
    c = points[0]
    stop = points[1] if len(points) > 1 else end

    def r_at(offset: int) -> tuple[float, int] | None:
        pairs = [(curve[s][1], reference[s - offset][1]) for s in curve
                 if c < s <= stop and s - offset >= skip_early and s - offset in reference]
        return (pearson(*map(list, zip(*pairs))), len(pairs)) if len(pairs) >= 4 else None

    at_c = r_at(c)
    others = {o: r for o in range(-stop, stop + 1, 5) if o != c and (r := r_at(o)) is not None}
    return {
        "after_resume_at": c,
        "r_at_resume_offset": None if at_c is None else round(at_c[0], 3),
        "pairs": None if at_c is None else at_c[1],
        "r_other_offsets_max": round(max(r for r, _ in others.values()), 3) if others else None,
        "other_offsets": len(others),
    }


def peer_check(a: dict, points_a: list[int], b: dict, points_b: list[int]) -> dict | None:
    """r between run a's loss at step s and run b's at s (the order continued) and at s − (c_a − c_b)
    (it restarted at each run's first resume), over the steps both ran past their first resume and
    before their second; None when the resumes coincide or fewer than 4 pairs remain."""
    if not points_a or not points_b or points_a[0] == points_b[0]:
        return None
    shift = points_a[0] - points_b[0]
    start = max(points_a[0], points_b[0])
    stop = min([*points_a[1:2], *points_b[1:2], max(a), max(b)])
    window = [s for s in sorted(a) if start < s <= stop]

    def r_at(offset: int) -> float | None:
        pairs = [(a[s][1], b[s - offset][1]) for s in window if s - offset in b and s - offset > points_b[0]]
        return round(pearson(*map(list, zip(*pairs))), 3) if len(pairs) >= 4 else None

    continued, restarted = r_at(0), r_at(shift)
    if continued is None or restarted is None:
        return None
    return {"resumes": [points_a[0], points_b[0]], "pairs": len(window),
            "r_continued": continued, "r_restarted": restarted}


def coverage(run: Path, total_steps: int, gap: float, reference: dict | None, skip_early: int = 15) -> dict:
    curve = losses(run)
    points = resumes(curve, gap)
    finished = (run / "train_result.json").is_file()
    bounds = [0, *points, total_steps if finished else max(curve)]  # an unfinished run: up to its last log
    segments = [b - a for a, b in zip(bounds, bounds[1:])]
    seen = max(segments)
    result = {
        "assumes": "the data order restarted at each resume (runs trained before 2026-12-04)",
        "resumed_from": points,
        "segments": segments,
        "unique_steps": seen,
        "unique_fraction": round(seen / total_steps, 3),
        "finished": finished,
        "first_steps_seen_times": [min(segments), len(segments)],  # the first N steps' batches, K times
    }
    if reference and points:
        result["replay_check"] = replay_check(curve, points, bounds[-1], reference, skip_early)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders holding metrics.jsonl")
    parser.add_argument("--steps", type=int, default=132, help="optimiser steps of the full run (one epoch)")
    parser.add_argument("--gap", type=float, default=1.6, help="a resume is a wait longer than this × the median")
    parser.add_argument("--reference", type=Path, help="an uninterrupted run with the same seed and data")
    parser.add_argument("--skip-early", type=int, default=15, help="reference steps left out of the replay check")
    parser.add_argument("--peers", action="store_true", help="line up every two runs that resumed at different steps")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    reference = None
    if args.reference:
        curve = losses(args.reference)
        first = (resumes(curve, args.gap) or [max(curve)])[0]
        reference = {s: v for s, v in curve.items() if s <= first}  # its uninterrupted stretch only
    report = {}
    for run in args.runs:
        if (run / "metrics.jsonl").is_file():
            report[str(run).rstrip("/")] = coverage(run, args.steps, args.gap, reference, args.skip_early)
    if args.peers:
        curves = {name: losses(Path(name)) for name in report}
        report_peers = {}
        for i, name_a in enumerate(report):
            for name_b in list(report)[i + 1:]:
                check = peer_check(curves[name_a], report[name_a]["resumed_from"],
                                   curves[name_b], report[name_b]["resumed_from"])
                if check:
                    report_peers[f"{name_a} | {name_b}"] = check
                    print(f"{name_a} | {name_b}: {check}")
        report = {"runs": report, "peer_checks": report_peers}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, row in (report["runs"] if args.peers else report).items():
        print(f"{name}: resumed from {row['resumed_from']}; if its data restarted at each resume, it saw"
              f" {row['unique_steps']} of {args.steps} steps' data ({row['unique_fraction']:.0%});"
              f" {row.get('replay_check', {})}")


if __name__ == "__main__":
    main()
