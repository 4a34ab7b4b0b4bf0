"""`python src/run.py task=rescore task.run=<eval run> benchmark=<b> benchmark.loader.protocol=<p>`:
score an evaluation's existing outputs again under another protocol, without generating again.

The benchmark config must describe the same data the run answered (every prediction's id must be
one of its items). Each output is scored with the benchmark's scorer as configured; the new
`results.json` and `scores.jsonl` go to `task.out` (default `<run>_<protocol>`), with
`rescored_from` naming the run and its effective protocol (`evals.protocols`: a LoCoMo "paper" run
from before 2026-12-03 is "paper_v0"). The run itself is not touched. Both protocols of
one set of outputs can then be compared item by item (`task=compare`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from deltamem.errors import UserError
from deltamem.tasks import say

from .predictions import read_rows
from .protocols import effective_protocol
from .runner import summarize
from .score_vectors import PREDICTIONS_FILE, write_score_vectors


class RescoreError(UserError, ValueError):
    pass


def rescore(cfg: DictConfig, run: str, out: str | None = None) -> dict[str, Any]:
    source = Path(run)
    for name in ("results.json", PREDICTIONS_FILE):
        if not (source / name).is_file():
            raise RescoreError(f"{source / name} not found: task.run must be a finished evaluation run")
    old = json.loads((source / "results.json").read_text())
    benchmark = instantiate(cfg.benchmark.loader)
    if benchmark.name != old.get("benchmark"):
        raise RescoreError(f"{source} is a {old.get('benchmark')} run; benchmark={benchmark.name} cannot rescore it")
    _, items = benchmark.load()
    by_id = {item.id: item for item in items}
    rows = read_rows(source / PREDICTIONS_FILE)
    unknown = sorted({r["id"] for r in rows} - set(by_id))
    if unknown:
        raise RescoreError(f"{len(unknown)} predictions of {source} (first {unknown[0]!r}) are not items of this "
                           "benchmark config: rescore with the data and settings the run used")
    scored = [{**r, "category": by_id[r["id"]].category, "scores": benchmark.score(r["output"], by_id[r["id"]])}
              for r in rows]
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    per_condition, _ = summarize(benchmark, scored, conditions)
    protocol = getattr(benchmark, "protocol", None)
    source_spec = getattr(benchmark, "protocol_source", None)
    results = {
        **{k: v for k, v in old.items() if k not in ("conditions", "protocol", "protocol_source", "timing")},
        "protocol": protocol,
        **({"protocol_source": source_spec} if source_spec else {}),
        "conditions": per_condition,
        "rescored_from": {"run": str(source), "protocol": effective_protocol(old)},
    }
    target = Path(out) if out else source.with_name(f"{source.name}_{protocol}")
    target.mkdir(parents=True, exist_ok=True)
    (target / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_score_vectors(target, scored)
    say(json.dumps({c: round(v["overall"], 2) for c, v in per_condition.items()}) + f"  ({protocol}; {target})")
    return results


__all__ = ["RescoreError", "rescore"]
