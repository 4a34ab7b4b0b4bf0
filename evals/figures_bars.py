"""Score by condition and method: a panel per benchmark, a group of bars per condition, a bar per series.

A series is a method (or a variant of one) named by its run folders: `series: [{label, runs}]`, where
`runs` takes what `task=table` takes (a run, a folder of runs, a glob, or a list) and holds at most
one run per benchmark unless they are seeds of one setting (their scores are then averaged, as a
recovery bar averages seeds). Without `series`, `runs` gives one series per method, labelled as
`task=table` labels its rows. Bar heights are the runs' `results.json` numbers and the error bars
95% cluster-bootstrap CIs (`evals.figures.bar_stats`); a condition a series did not run is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt

from evals.figures import CONDITION_NAMES, Figure, bar_stats, plain, save_figure
from evals.protocols import effective_protocol
from evals.tables import _ordered_conditions, expand_runs, load_results

PALETTE = ["#9e9e9e", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def series_from_runs(runs: str | Sequence[str]) -> list[dict[str, Any]]:
    """One series per method over the run folders (`method [folder]` where a benchmark has two runs
    of one method), each `{label, runs}` in first-appearance order."""
    results = load_results(expand_runs(plain(runs)))
    labels = [r["method"] for r in results]
    for index, run in enumerate(results):
        if sum(1 for r in results if r["method"] == run["method"] and r["benchmark"] == run["benchmark"]) > 1:
            labels[index] = f"{run['method']} [{Path(run['run_dir']).name}]"
    out: dict[str, list[str]] = {}
    for label, run in zip(labels, results):
        out.setdefault(label, []).append(run["run_dir"])
    return [{"label": label, "runs": found} for label, found in out.items()]


class ConditionFigure(Figure):
    """Bars of every series' score under every condition, with 95% cluster-bootstrap CIs."""

    kind = "conditions"

    def __init__(
        self,
        name: str = "conditions",
        series: Sequence[dict[str, Any]] | None = None,
        runs: str | Sequence[str] | None = None,
        conditions: Sequence[str] | None = None,
        benchmarks: Sequence[str] | None = None,
        title: str | None = None,
        out: str | None = None,
        metric: str | None = None,
        n_boot: int = 10000,
        seed: int = 0,
        ci: float = 0.95,
    ) -> None:
        super().__init__(name, title, out)
        if (series is None) == (runs is None):
            raise ValueError(f"figure {name!r}: give either series=[{{label, runs}}] or runs=<folders>")
        self.series, self.runs = plain(series), plain(runs)
        self.conditions, self.benchmarks = plain(conditions), plain(benchmarks)
        self.stats = {"metric": metric, "n_boot": n_boot, "seed": seed, "ci": ci}

    def data(self) -> dict[str, Any]:
        series = self.series if self.series is not None else series_from_runs(self.runs)
        by_series = []  # (label, {benchmark: [results]})
        for entry in series:
            grouped: dict[str, list[dict[str, Any]]] = {}
            for results in load_results(expand_runs(entry["runs"])):
                grouped.setdefault(results["benchmark"], []).append(results)
            by_series.append((str(entry["label"]), grouped))
        everything = [r for _, grouped in by_series for runs in grouped.values() for r in runs]
        benchmarks = self.benchmarks or list(dict.fromkeys(r["benchmark"] for r in everything))
        specs, protocol_of = [], {}
        for benchmark in benchmarks:
            runs = [r for r in everything if r["benchmark"] == benchmark]
            protocols = sorted({str(effective_protocol(r)) for r in runs})
            if len(protocols) > 1:
                raise ValueError(f"figure {self.name!r}: {benchmark} runs under different protocols {protocols}")
            protocol_of[benchmark] = protocols[0] if protocols else None
            for condition in self.conditions or _ordered_conditions(runs):
                for label, grouped in by_series:
                    chosen = grouped.get(benchmark, [])
                    if chosen and all(condition in r["conditions"] for r in chosen):
                        specs.append({"label": label, "run": [r["run_dir"] for r in chosen], "condition": condition})
        if not specs:
            raise ValueError(f"figure {self.name!r}: no run holds any of the asked benchmarks and conditions")
        rows = bar_stats(specs, **self.stats)
        for spec, row in zip(specs, rows):
            row.update(series=spec["label"], protocol=protocol_of[row["benchmark"]])
        return {"bars": rows}

    def draw(self, data: dict[str, Any], out_png: Path) -> None:
        bars = data["bars"]
        benchmarks = list(dict.fromkeys(b["benchmark"] for b in bars))
        labels = list(dict.fromkeys(b["series"] for b in bars))
        colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
        groups = [list(dict.fromkeys(b["condition"] for b in bars if b["benchmark"] == k)) for k in benchmarks]
        fig, axes = plt.subplots(
            1, len(benchmarks), figsize=(1.5 + 0.5 * len(labels) * sum(map(len, groups)), 3.8), squeeze=False,
            gridspec_kw={"width_ratios": [len(g) for g in groups]},
        )  # fmt: skip
        width = 0.8 / len(labels)
        for axis, benchmark, conditions in zip(axes[0], benchmarks, groups):
            panel = [b for b in bars if b["benchmark"] == benchmark]
            for index, label in enumerate(labels):
                mine = [b for b in panel if b["series"] == label]
                if not mine:
                    continue
                xs = [conditions.index(b["condition"]) + (index - (len(labels) - 1) / 2) * width for b in mine]
                heights = [b["height"] for b in mine]
                errors = [[b["height"] - b["ci_low"] for b in mine], [b["ci_high"] - b["height"] for b in mine]]
                axis.bar(xs, heights, width, yerr=errors, color=colours[label], capsize=2, edgecolor="black",
                         linewidth=0.5, label=label)  # fmt: skip
            axis.set_xticks(range(len(conditions)), [CONDITION_NAMES.get(c, c) for c in conditions], fontsize=8)
            axis.set_title(f"{benchmark} ({panel[0]['protocol']})")
            axis.set_ylabel(f"{panel[0]['metric']} (%)")
            axis.set_ylim(0, max(1.0, max(b["ci_high"] for b in panel) * 1.15))
            axis.grid(axis="y", alpha=0.3)
        axes[0][-1].legend(fontsize=8, loc="upper right")
        if self.title:
            fig.suptitle(self.title, fontsize=10)
        fig.tight_layout()
        save_figure(fig, out_png)
