"""HotpotQA EM per condition, split by the gold answer's type: yes/no or a span (an exploratory view).

Reads each run's committed `eval_hotpotqa/scores.jsonl` (ids and scores only) and the gold answers
from the HotpotQA file under the data directory (never committed). Writes, per run and condition,
EM on the yes/no questions and on the span questions, with their counts.

    python scripts/hotpotqa_by_answer_type.py --data ../shared/data/hotpot_dev_distractor_subset500.json \
        --run frozen=results/2026-12-03_h200_s9/frozen --run tsw=results/2026-12-04_h200_s13/tsw_lr1e-3 \
        --out results/2026-12-04_h200_s13/hotpotqa_by_answer_type.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

YES_NO = ("yes", "no")


def answer_types(data: Path) -> dict[str, str]:
    """question id → "yes/no" or "span", from the gold answers."""
    records = json.loads(data.read_text())
    return {str(r["_id"]): "yes/no" if str(r["answer"]).strip().lower() in YES_NO else "span" for r in records}


def by_type(run: Path, types: dict[str, str]) -> dict[str, dict[str, dict[str, float]]]:
    """condition → answer type → {"em": mean EM in points, "n": questions}."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in (run / "eval_hotpotqa" / "scores.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["id"] not in types:
            raise ValueError(f"{run}: question {row['id']!r} is not in the data file")
        sums[row["condition"]][types[row["id"]]].append(float(row["em"]))
    return {
        condition: {kind: {"em": round(100 * sum(v) / len(v), 2), "n": len(v)} for kind, v in sorted(split.items())}
        for condition, split in sums.items()
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the HotpotQA JSON the runs were scored on")
    parser.add_argument("--run", action="append", required=True, help="NAME=RUN_FOLDER (holding eval_hotpotqa/)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    types = answer_types(args.data)
    counts = {kind: sum(1 for t in types.values() if t == kind) for kind in ("yes/no", "span")}
    report = {"data": args.data.name, "counts": counts, "runs": {}}
    for spec in args.run:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"--run takes NAME=FOLDER, got {spec!r}")
        report["runs"][name] = {"folder": folder, "conditions": by_type(Path(folder), types)}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, run in report["runs"].items():
        for condition, split in run["conditions"].items():
            cells = ", ".join(f"{kind} {v['em']:.1f} (n={v['n']})" for kind, v in split.items())
            print(f"{name} {condition}: {cells}")
    return report


if __name__ == "__main__":
    main()
