"""Paired differences between two sets of per-question scores, with cluster-bootstrap CIs.

Items are matched by question id. Δ = mean(a) − mean(b) in percentage points; its CI is a paired
cluster bootstrap: clusters (LoCoMo: `context_id`, the conversation; HotpotQA: one question per
context, so clusters are questions) are drawn with replacement and every item of a drawn cluster
enters both sides, so questions of one conversation move together and the CI is not overconfident.
The resamples are vectorised: each chunk of resamples draws a (resamples × clusters) index array,
counts how often each cluster was drawn and takes the means as (counts @ cluster sums) / (counts @
cluster sizes). `bootstrap_mean_ci` is the one-sided version (a bar's error bar).

By default the items are exactly those the benchmark's `overall` counts (LoCoMo under every protocol
leaves category 5 out; `overall_exclusions`); `compare_runs` checks that the scores it reads
reproduce `results.json` before comparing, and refuses runs of different effective protocols
(`evals.protocols.effective_protocol`: a LoCoMo "paper" file from before 2026-12-03 is "paper_v0").
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from evals.protocols import effective_protocol
from evals.score_vectors import ID_KEYS, condition_vectors, load_score_vectors, main_metric

# Categories a benchmark's `overall` leaves out, by (benchmark, protocol).
OVERALL_EXCLUSIONS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("locomo", "paper"): ("5",),
    ("locomo", "paper_v0"): ("5",),
    ("locomo", "official"): ("5",),
}
_CHUNK_ELEMENTS = 1 << 22  # gathered cluster sums per chunk of resamples


def overall_exclusions(benchmark: str, protocol: str | None) -> tuple[str, ...]:
    """The categories kept out of `overall` for this benchmark and protocol (usually none)."""
    return OVERALL_EXCLUSIONS.get((benchmark, protocol), ())


@dataclass
class PairedDelta:
    """Δ = mean_a − mean_b (percentage points) with its paired cluster-bootstrap CI."""

    metric: str
    delta: float
    ci_low: float
    ci_high: float
    mean_a: float
    mean_b: float
    n: int
    n_clusters: int
    frac_le_0: float  # share of resampled Δ ≤ 0
    frac_ge_0: float  # share of resampled Δ ≥ 0
    p_value: float  # two-sided: min(1, 2 · min(frac_le_0, frac_ge_0))
    ci: float
    n_boot: int
    seed: int
    cluster_by: str | None
    excluded_categories: list[str]
    missing_in_a: int = 0
    missing_in_b: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MeanCI:
    """A mean (%) with its cluster-bootstrap CI."""

    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_clusters: int
    ci: float
    n_boot: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _select(rows: Sequence[dict[str, Any]], exclude: Sequence[str], side: str) -> dict[str, dict[str, Any]]:
    """Rows by id without the excluded categories; duplicate ids are an error."""
    excluded = {str(c) for c in exclude}
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        if str(row.get("category")) in excluded:
            continue
        key = str(row["id"])
        if key in by_id:
            raise ValueError(f"side {side}: id {key!r} appears twice (pass the rows of one condition)")
        by_id[key] = row
    return by_id


def _values(rows: Sequence[dict[str, Any]], metric: str, side: str) -> np.ndarray:
    missing = [r["id"] for r in rows if not isinstance(r.get(metric), (int, float))]
    if missing:
        raise KeyError(f"side {side}: {len(missing)} item(s) lack metric {metric!r}, e.g. {missing[0]!r}")
    return np.asarray([float(r[metric]) for r in rows], dtype=np.float64)


def _cluster_codes(rows: Sequence[dict[str, Any]], cluster_by: str | None) -> np.ndarray:
    """Cluster index per item, in first-appearance order; an item without a label is its own cluster."""
    mapping: dict[tuple[str, str], int] = {}
    codes = []
    for row in rows:
        label = None if cluster_by in (None, "id") else row.get(cluster_by)
        key = ("item", str(row["id"])) if label is None else ("cluster", str(label))
        codes.append(mapping.setdefault(key, len(mapping)))
    return np.asarray(codes, dtype=np.int64)


def resampled_means(
    values: np.ndarray, codes: np.ndarray, n_boot: int, seed: int
) -> tuple[np.ndarray, int]:
    """Cluster-bootstrap means of each row of `values` (S × n items): returns (S × n_boot, clusters).

    Each resample draws as many clusters as there are, with replacement, and averages all items of
    the drawn clusters (a cluster drawn twice counts twice)."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    n_clusters = int(codes.max()) + 1
    sums = np.stack([np.bincount(codes, weights=v, minlength=n_clusters) for v in values])  # S × K
    sizes = np.bincount(codes, minlength=n_clusters).astype(np.float64)  # K
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // (n_clusters * values.shape[0]))
    out = np.empty((values.shape[0], n_boot))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        drawn = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        rows = np.arange(stop - start)[:, None] * n_clusters  # times each cluster is drawn, per resample
        counts = np.bincount((drawn + rows).ravel(), minlength=drawn.size).reshape(drawn.shape).astype(np.float64)
        out[:, start:stop] = (counts @ sums.T).T / (counts @ sizes)
    return out, n_clusters


def _interval(samples: np.ndarray, ci: float) -> tuple[float, float]:
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    low, high = np.quantile(samples, [(1.0 - ci) / 2.0, 1.0 - (1.0 - ci) / 2.0])
    return float(low), float(high)


def paired_delta(
    a_scores: Sequence[dict[str, Any]],
    b_scores: Sequence[dict[str, Any]],
    metric: str | None = None,
    cluster_by: str | None = "context_id",
    n_boot: int = 10000,
    seed: int = 0,
    ci: float = 0.95,
    exclude_categories: Sequence[str] = (),
    intersect: bool = False,
) -> PairedDelta:
    """Δ = mean(a) − mean(b) (points) over items matched by id, with a paired cluster-bootstrap CI.

    `cluster_by`: the row key whose equal values form a cluster (None or "id": every item alone).
    The id sets must agree unless `intersect=True` (then the common ids are compared)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    metric = metric or main_metric(a_scores)
    a_by, b_by = _select(a_scores, exclude_categories, "a"), _select(b_scores, exclude_categories, "b")
    only_a, only_b = [k for k in a_by if k not in b_by], [k for k in b_by if k not in a_by]
    if (only_a or only_b) and not intersect:
        raise ValueError(
            f"the two sides hold different questions: {len(only_b)} id(s) missing on side a, "
            f"{len(only_a)} missing on side b (e.g. {(only_b or only_a)[0]!r}); pass intersect=True to compare "
            "the common ones"
        )
    ids = [k for k in a_by if k in b_by]
    if not ids:
        raise ValueError("no question is common to both sides")
    rows_a, rows_b = [a_by[k] for k in ids], [b_by[k] for k in ids]
    for ra, rb in zip(rows_a, rows_b):
        if str(ra.get("category")) != str(rb.get("category")):
            raise ValueError(f"id {ra['id']!r} has category {ra.get('category')!r} in a, {rb.get('category')!r} in b")
        if cluster_by not in (None, "id") and str(ra.get(cluster_by)) != str(rb.get(cluster_by)):
            raise ValueError(
                f"id {ra['id']!r} lies in {cluster_by} {ra.get(cluster_by)!r} in a, {rb.get(cluster_by)!r} in b"
            )
    values = np.stack([_values(rows_a, metric, "a"), _values(rows_b, metric, "b")])
    codes = _cluster_codes(rows_a, cluster_by)
    means, n_clusters = resampled_means(values, codes, n_boot, seed)
    deltas = 100.0 * (means[0] - means[1])
    low, high = _interval(deltas, ci)
    le, ge = float(np.mean(deltas <= 0.0)), float(np.mean(deltas >= 0.0))
    mean_a, mean_b = 100.0 * float(values[0].mean()), 100.0 * float(values[1].mean())
    return PairedDelta(
        metric=metric,
        delta=mean_a - mean_b,
        ci_low=low,
        ci_high=high,
        mean_a=mean_a,
        mean_b=mean_b,
        n=len(ids),
        n_clusters=n_clusters,
        frac_le_0=le,
        frac_ge_0=ge,
        p_value=min(1.0, 2.0 * min(le, ge)),
        ci=ci,
        n_boot=n_boot,
        seed=seed,
        cluster_by=cluster_by,
        excluded_categories=[str(c) for c in exclude_categories],
        missing_in_a=len(only_b) if intersect else 0,
        missing_in_b=len(only_a) if intersect else 0,
    )


def bootstrap_mean_ci(
    scores: Sequence[dict[str, Any]],
    metric: str | None = None,
    cluster_by: str | None = "context_id",
    n_boot: int = 10000,
    seed: int = 0,
    ci: float = 0.95,
    exclude_categories: Sequence[str] = (),
) -> MeanCI:
    """The mean (%) of `metric` over the items and its cluster-bootstrap CI."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    metric = metric or main_metric(scores)
    rows = list(_select(scores, exclude_categories, "scores").values())
    if not rows:
        raise ValueError("no items left to average")
    values = _values(rows, metric, "scores")
    means, n_clusters = resampled_means(values, _cluster_codes(rows, cluster_by), n_boot, seed)
    low, high = _interval(100.0 * means[0], ci)
    return MeanCI(metric, 100.0 * float(values.mean()), low, high, len(rows), n_clusters, ci, n_boot, seed)


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(results.json, score vectors) of a run directory (scores built from predictions if absent)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a finished evaluation run?")
    return json.loads(path.read_text()), load_score_vectors(run_dir)


def check_against_results(
    results: dict[str, Any], condition: str, metric: str, rows: Sequence[dict[str, Any]], exclude: Sequence[str]
) -> None:
    """Raise unless the selected rows reproduce the condition's `n` and `metric` in results.json."""
    summary = results.get("conditions", {}).get(condition)
    if summary is None:
        raise KeyError(f"results.json has no condition {condition!r}; present: {list(results.get('conditions', {}))}")
    kept = list(_select(rows, exclude, condition).values())
    if isinstance(summary.get("n"), int) and summary["n"] != len(kept):
        raise ValueError(
            f"{condition}: {len(kept)} scored items (excluding categories {list(exclude)}) but results.json counts "
            f"{summary['n']} in overall: pass exclude_categories explicitly"
        )
    reported = summary.get(metric)
    if isinstance(reported, (int, float)) and kept:
        mean = 100.0 * float(np.mean(_values(kept, metric, condition)))
        if abs(mean - reported) > 1e-6:
            raise ValueError(f"{condition}: scores give {metric} {mean:.6f} but results.json says {reported:.6f}")


def averaged_rows(per_run: Sequence[Sequence[dict[str, Any]]], side: str) -> list[dict[str, Any]]:
    """Per-question scores averaged over runs (the seeds of one arm, the pre-registered primary
    analysis). Every run must hold the same questions, each in the same category and context; the
    numeric scores are averaged, the rest is the first run's."""
    first = per_run[0]
    order = [str(r["id"]) for r in first]
    for index, rows in enumerate(per_run[1:], start=1):
        ids = [str(r["id"]) for r in rows]
        if sorted(ids) != sorted(order):
            missing = sorted(set(order) ^ set(ids))
            raise ValueError(f"side {side}: run {index} holds other questions than run 0 (e.g. {missing[0]!r})")
    by_run = [{str(r["id"]): r for r in rows} for rows in per_run]
    out = []
    for key in order:
        rows = [run[key] for run in by_run]
        for field in ("category", "context_id"):
            if len({str(r.get(field)) for r in rows}) > 1:
                raise ValueError(f"side {side}: question {key!r} differs in {field} between runs")
        merged = dict(rows[0])
        for name, value in rows[0].items():
            if name not in ID_KEYS and isinstance(value, (int, float)):
                merged[name] = float(np.mean([float(r[name]) for r in rows]))
        out.append(merged)
    return out


def _side(
    runs: str | Path | Sequence[str | Path], condition: str, side: str
) -> tuple[list[tuple[dict, list[dict]]], list[dict]]:
    """(each run's results.json and score rows of `condition`, the rows to compare: one run's, or
    the per-question average over every run when `runs` lists several)."""
    listed = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not listed:
        raise ValueError(f"side {side}: no run given")
    loaded = []
    for run in listed:
        results, vectors = load_run(run)
        loaded.append((results, condition_vectors(vectors, condition)))
    first = loaded[0][0]
    for other, _ in loaded[1:]:
        if (other["benchmark"], effective_protocol(other)) != (first["benchmark"], effective_protocol(first)):
            raise ValueError(f"side {side}: runs of different benchmarks or protocols cannot be averaged")
    rows = loaded[0][1] if len(loaded) == 1 else averaged_rows([r for _, r in loaded], side)
    return loaded, rows


def compare_runs(
    a_run: str | Path | Sequence[str | Path],
    a_condition: str,
    b_run: str | Path | Sequence[str | Path],
    b_condition: str,
    metric: str | None = None,
    cluster_by: str | None = "context_id",
    exclude_categories: Sequence[str] | None = None,
    **bootstrap: Any,
) -> dict[str, Any]:
    """`paired_delta` between a condition of run a and a condition of run b (possibly the same run).

    A side given as a list of runs (an arm's seeds) compares its per-question scores averaged over them.
    `exclude_categories=None`: the benchmark's own `overall` exclusions, checked against results.json."""
    loaded_a, rows_a = _side(a_run, a_condition, "a")
    loaded_b, rows_b = _side(b_run, b_condition, "b")
    results_a, results_b = loaded_a[0][0], loaded_b[0][0]
    if results_a["benchmark"] != results_b["benchmark"]:
        raise ValueError(f"runs of different benchmarks: {results_a['benchmark']} vs {results_b['benchmark']}")
    protocol_a, protocol_b = effective_protocol(results_a), effective_protocol(results_b)
    if protocol_a != protocol_b:
        raise ValueError(f"runs under different protocols: {protocol_a} vs {protocol_b}")
    metric = metric or main_metric(rows_a)
    default = exclude_categories is None
    exclude = overall_exclusions(results_a["benchmark"], protocol_a) if default else exclude_categories
    if default:  # every run's rows must reproduce its own results.json
        for loaded, condition in ((loaded_a, a_condition), (loaded_b, b_condition)):
            for results, rows in loaded:
                check_against_results(results, condition, metric, rows, exclude)
    delta = paired_delta(rows_a, rows_b, metric, cluster_by, exclude_categories=exclude, **bootstrap)

    def named(runs: Any) -> Any:
        return str(runs) if isinstance(runs, (str, Path)) else [str(r) for r in runs]

    return {
        "benchmark": results_a["benchmark"],
        "protocol": protocol_a,
        "a": {"run": named(a_run), "condition": a_condition, "method": results_a.get("method")},
        "b": {"run": named(b_run), "condition": b_condition, "method": results_b.get("method")},
        **delta.to_dict(),
    }


def _run_label(run: str | list[str]) -> str:
    """A side's run for the CSV: one folder, or an arm's seeds joined by ';'."""
    return ";".join(run) if isinstance(run, list) else run


def comparison_tables(rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """(Markdown, CSV) of `compare_runs` results, one line per named comparison."""
    level = f"{100 * rows[0]['ci']:g}%" if rows else "95%"
    header = ["name", "benchmark", "metric", "Δ", f"{level} CI", "n", "clusters", "mean a", "mean b", "p"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    fields = ["name", "benchmark", "protocol", "metric", "delta", "ci_low", "ci_high", "n", "n_clusters"]
    fields += ["mean_a", "mean_b", "p_value", "a_run", "a_condition", "b_run", "b_condition"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        cells = [r["name"], r["benchmark"], r["metric"], f"{r['delta']:+.2f}"]
        cells.append(f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]")
        cells += [str(r["n"]), str(r["n_clusters"]), f"{r['mean_a']:.2f}", f"{r['mean_b']:.2f}", f"{r['p_value']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
        flat = {k: r[k] for k in fields if k in r}
        flat.update(a_run=_run_label(r["a"]["run"]), a_condition=r["a"]["condition"])
        flat.update(b_run=_run_label(r["b"]["run"]), b_condition=r["b"]["condition"])
        writer.writerow(flat)
    return "\n".join(lines), buffer.getvalue()
