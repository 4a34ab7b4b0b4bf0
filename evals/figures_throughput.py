"""Throughput against prompt length from the speed benchmarks' JSON reports (benchmarks/*.py --json).

A report holds `benchmark` (prefill, decode, train_step), `env` (device_name, …), `args` (backbone,
memory, …) and `cases`: each with `params` (batch and the length: `length` for prefill, `prompt`
for decode, `write` for a training step) and `variants` (`frozen`, `deltamem`, `lora`, or with the
decoding mode: `frozen_graph`, `deltamem_graph_generate`, …) holding `status`, `tokens_per_s` and
`median_s`. One line per `line` template filled from the variant (`{variant}`, `{method}`,
`{backend}`, `{memory}`, `{backbone}`, `{device}`, `{batch}`, `{file}`); a variant that did not run
(`oom`) is listed under `skipped`. Two points of one line at one length are refused (name the
files apart through `line`, or pick one batch size with `where: {batch: 1}`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt

from evals.figures import Figure, plain, save_figure

LENGTH_KEYS = {"prefill": "length", "decode": "prompt", "train_step": "write"}


def report_files(sources: str | Sequence[str]) -> list[Path]:
    """JSON files from `sources`: a file is itself, a folder every *.json below it, a pattern a glob."""
    found: list[Path] = []
    for source in [sources] if isinstance(sources, (str, Path)) else list(sources):
        text = str(source)
        candidates = sorted(Path().glob(text)) if any(ch in text for ch in "*?[") else [Path(text)]
        if not candidates or not all(c.exists() for c in candidates):
            raise FileNotFoundError(f"throughput figure: {text!r} matches no file")
        for candidate in candidates:
            found += sorted(candidate.rglob("*.json")) if candidate.is_dir() else [candidate]
    return list(dict.fromkeys(found))


def split_variant(variant: str) -> tuple[str, str]:
    """`deltamem_graph_generate` → (`deltamem`, `graph_generate`); a plain `frozen` runs `eager`."""
    method, _, backend = variant.partition("_")
    return method, backend or "eager"


class ThroughputFigure(Figure):
    """Tokens/s against the prompt length of one benchmark, a line per method/backend."""

    kind = "throughput"

    def __init__(
        self,
        sources: str | Sequence[str],
        benchmark: str = "prefill",
        name: str = "throughput",
        line: str = "{variant}",
        where: dict[str, Any] | None = None,
        title: str | None = None,
        out: str | None = None,
    ) -> None:
        super().__init__(name, title, out)
        if benchmark not in LENGTH_KEYS:
            raise ValueError(f"figure {name!r}: benchmark must be one of {sorted(LENGTH_KEYS)}, got {benchmark!r}")
        self.sources, self.benchmark, self.line = plain(sources), benchmark, line
        self.where = dict(plain(where) or {})

    def data(self) -> dict[str, Any]:
        key = LENGTH_KEYS[self.benchmark]
        points: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        seen: dict[tuple[str, Any], str] = {}
        for path in report_files(self.sources):
            report = json.loads(path.read_text())
            if not isinstance(report, dict) or report.get("benchmark") != self.benchmark or "cases" not in report:
                continue  # another benchmark's report, or a log summary
            args, env = report.get("args") or {}, report.get("env") or {}
            for case in report["cases"]:
                params = case["params"]
                if any(params.get(k) != v for k, v in self.where.items()):
                    continue
                for variant, timing in case["variants"].items():
                    method, backend = split_variant(variant)
                    fields = {"variant": variant, "method": method, "backend": backend, "memory": args.get("memory"),
                              "backbone": args.get("backbone"), "device": env.get("device_name"),
                              "batch": params.get("batch"), "file": path.stem}  # fmt: skip
                    point = {"line": self.line.format(**fields), "x": params[key], **fields, "path": str(path)}
                    if timing.get("status") != "ok":
                        skipped.append({**point, "status": timing.get("status")})
                        continue
                    where = (point["line"], point["x"])
                    if where in seen:
                        raise ValueError(
                            f"figure {self.name!r}: line {where[0]!r} at {key} {where[1]} comes from both "
                            f"{seen[where]} and {path}: tell them apart with line='{{variant}} {{file}}' or narrow "
                            "sources/where"
                        )
                    seen[where] = str(path)
                    points.append({**point, "tokens_per_s": timing["tokens_per_s"], "median_s": timing["median_s"]})
        if not points:
            raise ValueError(f"figure {self.name!r}: no {self.benchmark} timing in {self.sources}")
        points.sort(key=lambda p: (p["line"], p["x"]))
        return {"benchmark": self.benchmark, "x": key, "points": points, "skipped": skipped}

    def draw(self, data: dict[str, Any], out_png: Path) -> None:
        points = data["points"]
        fig, axis = plt.subplots(figsize=(5.2, 3.6))
        for line in dict.fromkeys(p["line"] for p in points):
            mine = [p for p in points if p["line"] == line]
            axis.plot([p["x"] for p in mine], [p["tokens_per_s"] for p in mine], marker="o", label=line)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel(f"{data['x']} (tokens)")
        axis.set_ylabel("tokens/s")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
        axis.set_title(self.title or f"{data['benchmark']} throughput", fontsize=10)
        fig.tight_layout()
        save_figure(fig, out_png)
