"""Ablation curves from a sweep's run folders: x = a setting (r, insertion depth, …), y = score, a line
per condition, a panel per benchmark.

`runs` is what `task=table` takes (`multirun/ablation_rank` stands for every `<job>/eval` below it).
A run's x is the config key `x` (e.g. `memory.rank`, `memory.layers`) read from the first of
`<run>/config.yaml`, `<run>/.hydra/config.yaml`, `<run>/../config.yaml`, `<run>/../.hydra/config.yaml`
that holds it (`task=train_eval` writes the first and the third). Runs sharing an x are seeds: their
points are averaged (`evals.figures.bar_stats`: results.json height, 95% cluster-bootstrap CI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
from omegaconf import OmegaConf

from evals.figures import COLOURS, CONDITION_NAMES, Figure, bar_stats, plain, save_figure
from evals.protocols import effective_protocol
from evals.tables import _ordered_conditions, expand_runs, load_results

_ABSENT = object()
CONFIG_FILES = ("config.yaml", ".hydra/config.yaml", "../config.yaml", "../.hydra/config.yaml")


def config_value(run_dir: str | Path, key: str) -> Any:
    """The value of the dotted config `key` for a run folder (see the module docstring)."""
    tried = []
    for name in CONFIG_FILES:
        path = Path(run_dir) / name
        tried.append(str(path))
        if path.is_file():
            value = OmegaConf.select(OmegaConf.load(path), key, default=_ABSENT, throw_on_resolution_failure=False)
            if value is not _ABSENT:
                return plain(value)
    raise KeyError(f"{run_dir}: no config file holds {key!r} (tried {tried})")


def _ordered(values: Sequence[Any], order: Sequence[Any] | None) -> list[Any]:
    """`order` (compared as text) when given, else numbers ascending, else first appearance."""
    distinct = list(dict.fromkeys(values))
    if order is not None:
        rank = {str(v): i for i, v in enumerate(order)}
        unknown = [v for v in distinct if str(v) not in rank]
        if unknown:
            raise ValueError(f"x values {unknown} are not in order={list(order)}")
        return sorted(distinct, key=lambda v: rank[str(v)])
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
        return sorted(distinct)
    return distinct


class AblationCurves(Figure):
    """Score against one swept setting, a line per condition with 95% CI error bars."""

    kind = "curves"

    def __init__(
        self,
        runs: str | Sequence[str],
        x: str,
        name: str = "curves",
        conditions: Sequence[str] | None = None,
        order: Sequence[Any] | None = None,
        x_label: str | None = None,
        title: str | None = None,
        out: str | None = None,
        metric: str | None = None,
        n_boot: int = 10000,
        seed: int = 0,
        ci: float = 0.95,
    ) -> None:
        super().__init__(name, title, out)
        self.runs, self.x, self.x_label = plain(runs), x, x_label
        self.conditions, self.order = plain(conditions), plain(order)
        self.stats = {"metric": metric, "n_boot": n_boot, "seed": seed, "ci": ci}

    def data(self) -> dict[str, Any]:
        results = load_results(expand_runs(self.runs))
        for run in results:
            run["x"] = config_value(run["run_dir"], self.x)
        xs = _ordered([r["x"] for r in results], self.order)
        specs, where = [], []
        for benchmark in dict.fromkeys(r["benchmark"] for r in results):
            runs = [r for r in results if r["benchmark"] == benchmark]
            protocols = sorted({str(effective_protocol(r)) for r in runs})
            if len(protocols) > 1:
                raise ValueError(f"figure {self.name!r}: {benchmark} runs under different protocols {protocols}")
            for condition in self.conditions or _ordered_conditions(runs):
                for x in xs:
                    seeds = [r for r in runs if r["x"] == x]
                    if seeds and all(condition in r["conditions"] for r in seeds):
                        runs_at_x = [r["run_dir"] for r in seeds]
                        specs.append({"label": f"{self.x}={x}", "run": runs_at_x, "condition": condition})
                        where.append(x)
        if not specs:
            raise ValueError(f"figure {self.name!r}: no run holds any of the asked conditions")
        rows = bar_stats(specs, **self.stats)
        return {"x": self.x, "x_values": xs, "points": [{"x": x, **row} for x, row in zip(where, rows)]}

    def draw(self, data: dict[str, Any], out_png: Path) -> None:
        points, xs = data["points"], data["x_values"]
        benchmarks = list(dict.fromkeys(p["benchmark"] for p in points))
        fig, axes = plt.subplots(1, len(benchmarks), figsize=(1.0 + 3.6 * len(benchmarks), 3.4), squeeze=False)
        for axis, benchmark in zip(axes[0], benchmarks):
            panel = [p for p in points if p["benchmark"] == benchmark]
            for condition in dict.fromkeys(p["condition"] for p in panel):
                line = [p for p in panel if p["condition"] == condition]
                positions = [xs.index(p["x"]) for p in line]
                heights = [p["height"] for p in line]
                errors = [[p["height"] - p["ci_low"] for p in line], [p["ci_high"] - p["height"] for p in line]]
                label = CONDITION_NAMES.get(condition, condition)
                axis.errorbar(positions, heights, yerr=errors, marker="o", capsize=3, color=COLOURS.get(condition),
                              label=label)  # fmt: skip
            axis.set_xticks(range(len(xs)), [str(x) for x in xs], fontsize=8)
            axis.set_xlabel(self.x_label or data["x"])
            axis.set_ylabel(f"{panel[0]['metric']} (%)")
            axis.set_title(benchmark)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        if self.title:
            fig.suptitle(self.title, fontsize=10)
        fig.tight_layout()
        save_figure(fig, out_png)
