"""MemoryAgentBench aggregation: source-name rules and the two ways results are averaged.

Rows are per-question dicts (`category` = the split, `dataset` = the source family, metric values).
- `weighted_summary` (the δ-mem release, PAPER_PROTOCOL.md §5.5): every question counts once, for
  the overall mean, each split and each dataset.
- `macro_summary` (MemoryAgentBench's tables, arXiv 2507.05257 Table 2): a column's mean over its
  questions, a category's mean over its columns, the overall mean over the categories.
All figures are percentages of the [0, 1] per-question values.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence


def first_match(rules: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The first rule whose `any_of` (one substring suffices; absent: no condition) and `all_of`
    (every substring) both hold for `name`."""
    for rule in rules:
        any_of, all_of = rule.get("any_of"), rule.get("all_of") or ()
        if (not any_of or any(s in name for s in any_of)) and all(s in name for s in all_of):
            return rule
    return None


def means(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """{"n": questions, metric: mean % over the rows that have it}."""
    out: dict[str, Any] = {"n": len(rows)}
    for key in metrics:
        values = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = 100.0 * sum(values) / len(values)
    return out


def grouped(rows: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], str]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(sorted(groups.items()))


def weighted_summary(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """Question-weighted means overall, per split (`per_category`) and per source family (`per_dataset`)."""
    per_category = {c: means(g, metrics) for c, g in grouped(rows, lambda r: str(r.get("category"))).items()}
    result: dict[str, Any] = {
        "overall": 100.0 * sum(float(r["score"]) for r in rows) / len(rows) if rows else 0.0,
        **means(rows, metrics),
        "per_category": per_category,
        "category_mean": sum(c.get("score", 0.0) for c in per_category.values()) / max(1, len(per_category)),
        "overall_policy": "question-weighted mean of `score` over every question (categories and datasets alike)",
    }
    with_dataset = [r for r in rows if r.get("dataset") is not None]
    if with_dataset:
        by_dataset = grouped(with_dataset, lambda r: str(r["dataset"]))
        result["per_dataset"] = {d: means(g, metrics) for d, g in by_dataset.items()}
    return result


def macro_summary(
    rows: Sequence[dict[str, Any]], column: Callable[[dict[str, Any]], str], metrics: Sequence[str]
) -> dict[str, Any]:
    """Column means of every metric; `score` of a category = mean of its columns' `score`, `overall`
    = mean of the categories'. The question-weighted mean is kept as `question_weighted`."""
    per_category: dict[str, Any] = {}
    for category, group in grouped(rows, lambda r: str(r.get("category"))).items():
        columns = {name: means(g, metrics) for name, g in grouped(group, column).items()}
        per_category[category] = {
            "n": len(group),
            "score": sum(c.get("score", 0.0) for c in columns.values()) / len(columns),
            "columns": columns,
        }
    overall = sum(c["score"] for c in per_category.values()) / len(per_category) if per_category else 0.0
    with_dataset = [r for r in rows if r.get("dataset") is not None]
    return {
        "overall": overall,
        "n": len(rows),
        "score": overall,
        "question_weighted": means(rows, metrics),
        "per_category": per_category,
        "per_dataset": {d: means(g, metrics) for d, g in grouped(with_dataset, lambda r: str(r["dataset"])).items()},
        "overall_policy": "mean over categories of the mean over their MemoryAgentBench table columns of `score` "
        "(each column: the mean over its questions)",
    }


__all__ = ["first_match", "grouped", "macro_summary", "means", "weighted_summary"]
