"""Paper-style tables rebuilt from run directories alone (their `results.json`).

One Markdown table per benchmark: a row per run (method / variant), per condition the overall
score, its sub-scores (categories, sub-tasks, competencies) and the ratio to the frozen backbone
(`vanilla`) under the same condition when such a run is among the inputs; then the paper's own
numbers for reference. The CSV holds the same cells in long form (one line per cell).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

FROZEN = "vanilla"


def load_results(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run_dir} a finished evaluation run?")
        results = json.loads(path.read_text())
        results["run_dir"] = str(run_dir)
        out.append(results)
    return out


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "–"


def build_tables(run_dirs: Sequence[Path]) -> tuple[str, str]:
    """(Markdown, CSV) for the runs, grouped by benchmark."""
    results = load_results(run_dirs)
    cells: list[dict[str, Any]] = []
    sections: list[str] = []
    for benchmark in sorted({r["benchmark"] for r in results}):
        runs = [r for r in results if r["benchmark"] == benchmark]
        conditions = [c for c in _ordered_conditions(runs)]
        categories = {
            c: sorted({k for r in runs for k in r["conditions"].get(c, {}).get("per_category", {})}) for c in conditions
        }
        header = ["method", "backbone"]
        for c in conditions:
            header += [f"{c}", *(f"{c}/{k}" for k in categories[c]), f"{c} ×frozen"]
        lines = [f"### {benchmark} (protocol: {runs[0].get('protocol')})", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for run in runs:
            frozen = next((r for r in runs if r["method"] == FROZEN and r.get("backbone") == run.get("backbone")), None)
            row = [run["method"], (run.get("backbone") or {}).get("name", "?")]
            for c in conditions:
                summary = run["conditions"].get(c)
                overall = summary["overall"] if summary else None
                subs = [(summary or {}).get("per_category", {}).get(k, {}) for k in categories[c]]
                sub_values = [_main_value(s) for s in subs]
                base = (frozen or {}).get("conditions", {}).get(c, {}).get("overall")
                ratio = overall / base if overall is not None and base else None
                row += [_fmt(overall), *(_fmt(v) for v in sub_values), _fmt(ratio)]
                cells.append(_cell(run, benchmark, c, "overall", overall))
                cells += [_cell(run, benchmark, c, k, v) for k, v in zip(categories[c], sub_values)]
            lines.append("| " + " | ".join(row) + " |")
        paper = runs[0].get("paper_numbers") or {}
        if paper:
            lines += [
                "",
                "Paper (Qwen3-4B-Instruct-2507, full context): "
                + "; ".join(f"{name} {_fmt(v.get('overall'))}" for name, v in paper.items()),
            ]
        sections.append("\n".join(lines))
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["benchmark", "method", "backbone", "condition", "metric", "value", "run_dir"]
    )
    writer.writeheader()
    writer.writerows(cells)
    return "\n\n".join(sections), buffer.getvalue()


def _main_value(summary: dict[str, Any]) -> float | None:
    numbers = [v for k, v in summary.items() if k != "n" and isinstance(v, (int, float))]
    return numbers[0] if numbers else None


def _ordered_conditions(runs: Sequence[dict[str, Any]]) -> list[str]:
    order = ["full_context", "no_context", "memory_only", "recent_window"]
    present = {c for r in runs for c in r["conditions"]}
    return [c for c in order if c in present] + sorted(present - set(order))


def _cell(run: dict[str, Any], benchmark: str, condition: str, metric: str, value: Any) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "method": run["method"],
        "backbone": (run.get("backbone") or {}).get("name"),
        "condition": condition,
        "metric": metric,
        "value": value,
        "run_dir": run["run_dir"],
    }
