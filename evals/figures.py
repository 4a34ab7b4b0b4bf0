"""The paper-style "no-context recovery" figure from run directories.

One panel per benchmark; one bar per requested (label, run(s), condition), in the order given:
typically the frozen backbone's `no_context`, δ-mem's `memory_only` (a bar per variant), the frozen
`full_context` and δ-mem's `memory_only_wrong_history`. A bar's height is the benchmark metric (%)
from `results.json` (the mean over runs when a bar names several seeds); its error bar is the 95%
cluster-bootstrap CI of the mean (`evals.paired.bootstrap_mean_ci`) over the per-question scores
averaged across those runs. PNG (Agg backend) and SVG are written side by side.

Every kind of figure `task=plot` draws is a `Figure` chosen by `_target_` in `task.figures`
(conf/task/plot.yaml): `RecoveryFigure` (here), `ConditionFigure` (evals/figures_bars.py),
`AblationCurves` (evals/figures_curves.py) and `ThroughputFigure` (evals/figures_throughput.py).
Each rebuilds its values from files alone and writes `<stem>.png`, `<stem>.svg` and `<stem>.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from evals.paired import bootstrap_mean_ci, check_against_results, load_run, overall_exclusions  # noqa: E402
from evals.protocols import effective_protocol  # noqa: E402
from evals.score_vectors import condition_vectors, main_metric  # noqa: E402

CONDITION_NAMES = {
    "no_context": "no context",
    "full_context": "full context",
    "memory_only": "memory only",
    "memory_only_wrong_history": "wrong history",
    "recent_window": "recent window",
}
COLOURS = {
    "no_context": "#9e9e9e",
    "memory_only": "#1f77b4",
    "full_context": "#2ca02c",
    "memory_only_wrong_history": "#d62728",
    "recent_window": "#ff7f0e",
}


def plain(value: Any) -> Any:
    """A Hydra/OmegaConf node as plain Python (lists and dicts); anything else as it is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def save_figure(fig: Any, out_png: str | Path) -> Path:
    """Write `fig` as `<out_png>` (150 dpi) and the SVG beside it, then close it."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=150)
    fig.savefig(out_png.with_suffix(".svg"))
    plt.close(fig)
    return out_png


class Figure:
    """A figure rebuilt from files alone: `data()` computes the plotted values, `draw()` the picture;
    `render(stem)` writes `<stem>.png`, `<stem>.svg` and the values as `<stem>.json`."""

    kind = "figure"

    def __init__(self, name: str, title: str | None = None, out: str | None = None) -> None:
        self.name, self.title, self.out = name, title, out

    def data(self) -> dict[str, Any]:
        raise NotImplementedError

    def draw(self, data: dict[str, Any], out_png: Path) -> None:
        raise NotImplementedError

    def render(self, stem: str | Path) -> dict[str, Any]:
        stem = Path(stem)
        data = {"kind": self.kind, "name": self.name, "title": self.title, **self.data()}
        self.draw(data, stem.with_name(stem.name + ".png"))
        stem.with_name(stem.name + ".json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return data


def _runs(spec: dict[str, Any]) -> list[str]:
    runs = spec.get("run", spec.get("runs"))
    runs = [runs] if isinstance(runs, (str, Path)) else list(runs or [])
    if not runs:
        raise ValueError(f"bar {spec.get('label')!r} names no run directory")
    return [str(r) for r in runs]


def average_over_runs(per_run: Sequence[Sequence[dict[str, Any]]], metric: str) -> list[dict[str, Any]]:
    """Per-question scores averaged over runs (seeds) holding the same questions, in the first run's order."""
    first = list(per_run[0])
    maps = [{str(r["id"]): r for r in rows} for rows in per_run]
    for index, mapping in enumerate(maps[1:], start=1):
        if set(mapping) != set(maps[0]):
            raise ValueError(f"run {index} holds different questions than run 0 ({len(mapping)} vs {len(maps[0])})")
    return [
        {
            "id": r["id"],
            "context_id": r.get("context_id"),
            "category": r.get("category"),
            metric: sum(float(m[str(r["id"])][metric]) for m in maps) / len(maps),
        }
        for r in first
    ]


def bar_stats(
    bars: Sequence[dict[str, Any]],
    metric: str | None = None,
    cluster_by: str | None = "context_id",
    n_boot: int = 10000,
    seed: int = 0,
    ci: float = 0.95,
) -> list[dict[str, Any]]:
    """Height (results.json, mean over runs) and bootstrap CI of each bar `{label, run, condition}`."""
    out = []
    for spec in bars:
        loaded = [load_run(run) for run in _runs(spec)]
        benchmarks = {results["benchmark"] for results, _ in loaded}
        if len(benchmarks) != 1:
            raise ValueError(f"bar {spec['label']!r} mixes benchmarks {sorted(benchmarks)}")
        results0 = loaded[0][0]
        condition = spec["condition"]
        rows = [condition_vectors(vectors, condition) for _, vectors in loaded]
        chosen = spec.get("metric") or metric or main_metric(rows[0])
        exclude = overall_exclusions(results0["benchmark"], effective_protocol(results0))
        values = []
        for (results, _), run_rows in zip(loaded, rows):
            check_against_results(results, condition, chosen, run_rows, exclude)
            summary = results["conditions"][condition]
            values.append(float(summary.get(chosen, summary["overall"])))
        interval = bootstrap_mean_ci(
            average_over_runs(rows, chosen), chosen, cluster_by, n_boot, seed, ci, exclude_categories=exclude
        )
        out.append(
            {
                "label": spec["label"],
                "benchmark": results0["benchmark"],
                "condition": condition,
                "method": results0.get("method"),
                "metric": chosen,
                "runs": _runs(spec),
                "height": sum(values) / len(values),
                "run_values": values,
                "ci_low": interval.ci_low,
                "ci_high": interval.ci_high,
                "ci": ci,
                "n": interval.n,
                "n_clusters": interval.n_clusters,
            }
        )
    return out


def plot_recovery(
    bars: Sequence[dict[str, Any]] | str | Path,
    out_png: str | Path,
    title: str | None = "No-context recovery",
    **stats: Any,
) -> list[dict[str, Any]]:
    """Draw the figure (PNG + SVG beside it) and return the bars as plotted (heights, CIs).

    `bars`: rows of `bar_stats` (with `height`), bar specs `{label, run, condition}` (computed here),
    or the path of a JSON file holding either."""
    if isinstance(bars, (str, Path)):
        bars = json.loads(Path(bars).read_text())
    bars = list(bars)
    if not bars:
        raise ValueError("no bars to plot")
    rows = bars if all("height" in b for b in bars) else bar_stats(bars, **stats)
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in rows))
    widths = [sum(1 for r in rows if r["benchmark"] == b) for b in benchmarks]
    fig, axes = plt.subplots(
        1, len(benchmarks), figsize=(1.2 + 1.3 * len(rows), 3.6), squeeze=False, gridspec_kw={"width_ratios": widths}
    )
    for axis, benchmark in zip(axes[0], benchmarks):
        group = [r for r in rows if r["benchmark"] == benchmark]
        heights = [r["height"] for r in group]
        errors = [
            [max(0.0, r["height"] - r.get("ci_low", r["height"])) for r in group],
            [max(0.0, r.get("ci_high", r["height"]) - r["height"]) for r in group],
        ]
        colours = [COLOURS.get(r["condition"], "#8c564b") for r in group]
        axis.bar(range(len(group)), heights, yerr=errors, color=colours, capsize=3, edgecolor="black", linewidth=0.5)
        axis.set_xticks(range(len(group)), [r["label"] for r in group], rotation=30, ha="right", fontsize=8)
        axis.set_title(benchmark)
        axis.set_ylabel(f"{group[0]['metric']} (%)")
        axis.set_ylim(0, max(1.0, max(max(heights), max(r.get("ci_high", 0.0) for r in group)) * 1.15))
        axis.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out_png)
    return rows


class RecoveryFigure(Figure):
    """The no-context recovery bars as a `task.figures` entry: `bars` as `plot_recovery` takes them."""

    kind = "recovery"

    def __init__(
        self,
        bars: Sequence[dict[str, Any]],
        name: str = "recovery",
        title: str | None = "No-context recovery",
        out: str | None = None,
        metric: str | None = None,
        n_boot: int = 10000,
        seed: int = 0,
        ci: float = 0.95,
    ) -> None:
        super().__init__(name, title, out)
        self.bars = [dict(b) for b in plain(bars)]
        self.stats = {"metric": metric, "n_boot": n_boot, "seed": seed, "ci": ci}

    def data(self) -> dict[str, Any]:
        if not self.bars:
            raise ValueError(f"figure {self.name!r}: no bars to plot")
        return {"bars": bar_stats(self.bars, **self.stats)}

    def draw(self, data: dict[str, Any], out_png: Path) -> None:
        plot_recovery(data["bars"], out_png, title=self.title)
