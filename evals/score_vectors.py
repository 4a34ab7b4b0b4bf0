"""`scores.jsonl`: the per-question score vectors of a run, ids and numbers only.

One line per (question id, condition), in the order of `predictions.jsonl`:
`{"id", "condition", "context_id", "category", "<metric>": value, ...}` with the benchmark's
per-item scores as fractions in [0, 1]. No benchmark text (question, output, gold) is kept, so the
file can be shared and compared (`evals/paired.py`) without the data's licence coming with it.
The runner writes it beside `results.json`; `score_vectors_from_predictions` rebuilds it for
older runs from their `predictions.jsonl`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from evals.predictions import read_rows

SCORES_FILE = "scores.jsonl"
PREDICTIONS_FILE = "predictions.jsonl"
ID_KEYS = ("id", "condition", "context_id", "category")


def _number(value: Any) -> float | None:
    """A score as a float (bools count as 0/1); None for anything that is not a number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def score_vector(row: dict[str, Any]) -> dict[str, Any]:
    """The ids and numeric scores of one prediction row (nothing else)."""
    missing = [key for key in ("id", "condition", "scores") if key not in row]
    if missing:
        raise KeyError(f"prediction row lacks {missing} (keys: {sorted(row)})")
    out: dict[str, Any] = {
        "id": str(row["id"]),
        "condition": str(row["condition"]),
        "context_id": None if row.get("context_id") is None else str(row["context_id"]),
        "category": None if row.get("category") is None else str(row["category"]),
    }
    for metric, value in row["scores"].items():
        if metric in ID_KEYS:
            raise ValueError(f"score name {metric!r} collides with an id field of scores.jsonl")
        number = _number(value)
        if number is not None:
            out[metric] = number
    return out


def write_score_vectors(run_dir: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write `<run_dir>/scores.jsonl` from prediction rows, in the order given; returns its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    vectors = [score_vector(r) for r in rows]
    seen: set[tuple[str, str]] = set()
    for vector in vectors:
        key = (vector["id"], vector["condition"])
        if key in seen:
            raise ValueError(f"{run_dir}: (id, condition) {key} appears twice")
        seen.add(key)
    path = run_dir / SCORES_FILE
    tmp = run_dir / (SCORES_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in vectors), encoding="utf-8")
    tmp.replace(path)
    return path


def read_score_vectors(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of `<run_dir>/scores.jsonl` in file order."""
    path = Path(run_dir) / SCORES_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: rebuild it from predictions.jsonl with "
            "evals.score_vectors.score_vectors_from_predictions"
        )
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_vectors_from_predictions(run_dir: str | Path, write: bool = True) -> list[dict[str, Any]]:
    """Score vectors of an existing run's `predictions.jsonl` (written to scores.jsonl unless `write=False`)."""
    run_dir = Path(run_dir)
    path = run_dir / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} an evaluation run directory?")
    rows = read_rows(path)
    if write:
        write_score_vectors(run_dir, rows)
    return [score_vector(r) for r in rows]


def load_score_vectors(run_dir: str | Path) -> list[dict[str, Any]]:
    """`scores.jsonl` when present, else built (and written) from `predictions.jsonl`."""
    if (Path(run_dir) / SCORES_FILE).is_file():
        return read_score_vectors(run_dir)
    return score_vectors_from_predictions(run_dir, write=True)


def condition_vectors(vectors: Sequence[dict[str, Any]], condition: str) -> list[dict[str, Any]]:
    """The rows of one condition; raises naming the conditions present when there are none."""
    chosen = [v for v in vectors if v["condition"] == condition]
    if not chosen:
        present = list(dict.fromkeys(v["condition"] for v in vectors))
        raise KeyError(f"no score vectors for condition {condition!r}; present: {present}")
    return chosen


def main_metric(vectors: Sequence[dict[str, Any]]) -> str:
    """The benchmark's main metric: the first score key of the first row (what `overall` copies)."""
    for vector in vectors:
        for key, value in vector.items():
            if key not in ID_KEYS and isinstance(value, (int, float)):
                return key
    raise ValueError("no score vector carries a numeric score")
