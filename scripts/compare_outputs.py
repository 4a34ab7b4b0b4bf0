"""Whether two evaluation runs gave the same outputs, question by question, without copying any text.

    python scripts/compare_outputs.py RUN_A RUN_B [RUN_C ...] --out equality.json

Reads each run's predictions.jsonl and writes, per (id, condition), the sha256 of every run's output,
with the count of questions where each later run equals the first. The file holds hashes only (no
benchmark or model text), so it can be committed beside the runs' results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path


def outputs(run: Path) -> dict[str, str]:
    rows = (json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines() if line.strip())
    return {f"{r['id']}|{r['condition']}": r["output"] for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = [outputs(run) for run in args.runs]
    keys = sorted(runs[0])
    if any(sorted(r) != keys for r in runs[1:]):
        raise SystemExit("the runs answered different questions; compare runs of the same items")
    digest = lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]  # noqa: E731
    report = {
        "runs": [str(run) for run in args.runs],
        "questions": len(keys),
        "equal_to_first": {str(run): sum(r[k] == runs[0][k] for k in keys) for run, r in zip(args.runs[1:], runs[1:])},
        "output_sha256": {k: [digest(r[k]) for r in runs] for k in keys},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("questions", "equal_to_first")}))


if __name__ == "__main__":
    main()
