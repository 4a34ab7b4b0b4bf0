"""What an evaluation reports to its loggers: the scalars of `results.json` and, for W&B, a table of
the per-question predictions of `predictions.jsonl`.

Scalar keys (`summary_scalars`), one per number of the results:
  <benchmark>/<condition>/<metric>                       overall, the protocol's metrics, n
  <benchmark>/<condition>/<category name>/<metric>       per category (LoCoMo: multi_hop, not 1)
  <benchmark>/<condition>/<breakdown>/<group>/<metric>   other breakdowns (per_level → level, per_dataset →
                                                         dataset, nested ones such as MemoryAgentBench columns)
  <benchmark>/<condition>/<cost>                         prompt_tokens_mean, output_tokens_mean,
                                                         truncated_questions, answer_seconds_total,
                                                         memorize_seconds_total
  <benchmark>/method_cost/<name>                         the method's numeric costs (extra parameters, ...)
  <benchmark>/wall_seconds_this_process
A lone "None" category (a benchmark without categories) is left out: it repeats the overall figures.

`report(logger, ...)`: a logger whose run has a `summary` (W&B) gets the scalars as that summary, the
predictions as the table `<benchmark>/predictions` (W&B keeps the first `wandb.Table.MAX_ROWS`, 10,000,
of a logged table; the run folder keeps them all), and its run is finished (one W&B run per job).
Any other logger (CSV) gets the scalars as metrics at step 0.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

ROW_COLUMNS = ("id", "condition", "context_id", "category", "output")
COST_COLUMNS = (
    "prompt_tokens", "output_tokens", "truncated_tokens", "answer_seconds", "memorize_seconds", "seed", "prompt_hash",
)  # fmt: skip
OPTIONAL_COLUMNS = ("history_from", "item_meta", "extra")  # present only in some runs' rows
SCORE_PREFIX = "score_"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(node: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Every number below `node`, keyed `<prefix>/<key>/...`; other values are left out."""
    out: dict[str, float] = {}
    for key, value in node.items():
        if _is_number(value):
            out[f"{prefix}/{key}"] = value
        elif isinstance(value, Mapping):
            out.update(_numbers(value, f"{prefix}/{key}"))
    return out


def condition_scalars(prefix: str, summary: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one condition's aggregate under `prefix` (`<benchmark>/<condition>`)."""
    names = {str(k): str(v) for k, v in (summary.get("category_names") or {}).items()}
    out: dict[str, float] = {}
    for key, value in summary.items():
        if key == "per_category" and isinstance(value, Mapping):
            if list(value) != ["None"]:
                for category, values in value.items():
                    out.update(_numbers(values, f"{prefix}/{names.get(str(category), category)}"))
        elif key == "cost" and isinstance(value, Mapping):
            out.update(_numbers(value, prefix))
        elif key.startswith("per_") and isinstance(value, Mapping):
            out.update(_numbers(value, f"{prefix}/{key.removeprefix('per_')}"))
        elif isinstance(value, Mapping):
            out.update(_numbers(value, f"{prefix}/{key}"))
        elif _is_number(value):
            out[f"{prefix}/{key}"] = value
    return out


def summary_scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of a `results.json` (the keys of the module docstring)."""
    benchmark = results["benchmark"]
    timing = results.get("timing") or {}
    out: dict[str, float] = {}
    for condition, summary in results["conditions"].items():
        prefix = f"{benchmark}/{condition}"
        out.update(condition_scalars(prefix, summary))
        out.update(_numbers(timing.get(condition) or {}, prefix))
    out.update(_numbers(results.get("method_cost") or {}, f"{benchmark}/method_cost"))
    if _is_number(timing.get("wall_seconds_this_process")):
        out[f"{benchmark}/wall_seconds_this_process"] = timing["wall_seconds_this_process"]
    return out


def _cell(value: Any) -> Any:
    """A table cell: numbers, strings and None as they are; anything else as sorted JSON."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def predictions_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """(columns, data) of prediction rows: the question's fields, one `score_<name>` column per
    score the rows hold, the cost fields, and the optional fields that any row holds."""
    scores = list(dict.fromkeys(name for row in rows for name in row.get("scores", {})))
    optional = [name for name in OPTIONAL_COLUMNS if any(name in row for row in rows)]
    columns = [*ROW_COLUMNS, *(SCORE_PREFIX + s for s in scores), *COST_COLUMNS, *optional]
    data = []
    for row in rows:
        fields = [row.get(name) for name in ROW_COLUMNS]
        fields[2:4] = [None if v is None else str(v) for v in fields[2:4]]  # ids and categories as labels
        values = [row.get("scores", {}).get(name) for name in scores]
        values = [float(v) if isinstance(v, (bool, int, float)) else _cell(v) for v in values]
        data.append([*fields, *values, *(_cell(row.get(name)) for name in (*COST_COLUMNS, *optional))])
    return columns, data


def eval_config(results: Mapping[str, Any]) -> dict[str, Any]:
    """What the run config gets besides the resolved Hydra config: which evaluation this was."""
    return {"eval": {k: results.get(k) for k in ("benchmark", "method", "protocol", "fingerprint", "git_sha")}}


def report(
    logger: Any, config: Mapping[str, Any], results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """Send one evaluation to a Lightning logger (see the module docstring); returns the scalars."""
    scalars = summary_scalars(results)
    logger.log_hyperparams({**config, **eval_config(results)})
    run = logger.experiment
    if hasattr(run, "summary"):  # a W&B run
        run.summary.update(scalars)
        columns, data = predictions_table(rows)
        logger.log_table(key=f"{results['benchmark']}/predictions", columns=columns, data=data)
        run.finish()
    else:
        logger.log_metrics(scalars, step=0)
        logger.save()
    return scalars


__all__ = ["condition_scalars", "eval_config", "predictions_table", "report", "summary_scalars"]
