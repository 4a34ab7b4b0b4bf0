"""Paper-style tables rebuilt from run directories alone (their `results.json`).

One Markdown table per benchmark: a row per run (method / variant) and condition, with the overall
score, the protocol's other metrics (F1 beside EM, loose beside strict, ...), the sub-scores
(categories, sub-tasks, competencies), the question count and the ratio to the frozen backbone
(`vanilla`) under the same condition when such a run is among the inputs; then the paper's own
numbers for reference. The protocol column is each file's effective protocol (`evals.protocols`:
a LoCoMo "paper" file from before 2026-12-03 reads "paper_v0"), and a line names the spec each
protocol follows. The CSV holds the same cells in long form (one line per cell).
"""

from __future__ import annotations

import csv
import importlib
import io
import json
from pathlib import Path
from typing import Any, Sequence

from evals.conditions import PROMPT_CONDITIONS
from evals.protocols import effective_protocol

FROZEN = "vanilla"


def expand_runs(specs: str | Sequence[str]) -> list[Path]:
    """Run folders from `task.runs`: a folder holding results.json is itself; a folder without one
    (a sweep or a session's results) stands for every folder below it that holds one; a pattern
    with * ? [ is a glob over either. One string or a list; order kept, duplicates dropped."""
    specs = [specs] if isinstance(specs, (str, Path)) else list(specs)
    found: list[Path] = []
    for spec in specs:
        text = str(spec)
        candidates = sorted(Path().glob(text)) if any(ch in text for ch in "*?[") else [Path(text)]
        if not candidates:
            raise FileNotFoundError(f"task.runs: {text!r} matches no folder")
        for candidate in candidates:
            if (candidate / "results.json").is_file():
                found.append(candidate)
            elif candidate.is_dir():
                below = sorted(p.parent for p in candidate.rglob("results.json"))
                if not below:
                    raise FileNotFoundError(f"task.runs: {candidate} holds no results.json (no finished evaluation)")
                found += below
            elif not candidate.exists():
                raise FileNotFoundError(f"task.runs: {candidate} does not exist")
    return list(dict.fromkeys(found))


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
    """(Markdown, CSV) for the runs, grouped by benchmark: one row per (run, condition)."""
    results = load_results(run_dirs)
    cells: list[dict[str, Any]] = []
    sections: list[str] = []
    for benchmark in sorted({r["benchmark"] for r in results}):
        runs = [r for r in results if r["benchmark"] == benchmark]
        conditions = _ordered_conditions(runs)
        metrics = _ordered_union(_named_metrics(s) for r in runs for s in r["conditions"].values())
        categories = _ordered_union(_categories(s) for r in runs for s in r["conditions"].values())
        names = _category_names(runs)
        header = ["method", "backbone", "protocol", "condition", "overall", *metrics]
        header += [f"cat {k}" + (f" {names[k]}" if k in names else "") for k in categories] + ["n", "×frozen"]
        protocols = sorted({str(effective_protocol(r)) for r in runs})
        lines = [f"### {benchmark} (protocol: {', '.join(protocols)})", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        labels = _row_labels(runs)
        for run, label in zip(runs, labels):
            frozen = next((r for r in runs if r["method"] == FROZEN and r.get("backbone") == run.get("backbone")), None)
            for c in (c for c in conditions if c in run["conditions"]):
                summary = run["conditions"][c]
                overall = summary.get("overall")
                named = [summary.get(m) for m in metrics]
                per_category = summary.get("per_category", {})
                sub_values = [_main_value(per_category[k]) if k in per_category else None for k in categories]
                base = (frozen or {}).get("conditions", {}).get(c, {}).get("overall")
                ratio = overall / base if overall is not None and base else None
                backbone = (run.get("backbone") or {}).get("name", "?")
                row = [label, backbone, str(effective_protocol(run)), c, _fmt(overall), *map(_fmt, named)]
                row += list(map(_fmt, sub_values))
                row += [str(summary.get("n", "–")), _fmt(ratio)]
                lines.append("| " + " | ".join(row) + " |")
                cells.append(_cell(run, benchmark, c, "overall", overall))
                cells += [_cell(run, benchmark, c, m, v) for m, v in zip(metrics, named) if v is not None]
                cells += [
                    _cell(run, benchmark, c, f"cat {k}", v) for k, v in zip(categories, sub_values) if v is not None
                ]
        policy = _benchmark_constant(benchmark, "OVERALL_POLICY")
        lines += ["", f"Overall: {policy}."] if policy else []
        sources = _protocol_sources(runs)
        lines += ["", "Protocols: " + "; ".join(f"{p} = {s}" for p, s in sources.items()) + "."] if sources else []
        paper = runs[0].get("paper_numbers") or {}
        if paper:
            described = [
                f"{name} " + " / ".join(f"{k} {_fmt(v)}" for k, v in values.items()) for name, values in paper.items()
            ]
            lines += ["", "Paper (Qwen3-4B-Instruct-2507, full context): " + "; ".join(described)]
        sections.append("\n".join(lines))
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["benchmark", "method", "backbone", "condition", "metric", "value", "run_dir"]
    )
    writer.writeheader()
    writer.writerows(cells)
    return "\n\n".join(sections), buffer.getvalue()


def _protocol_sources(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Effective protocol → the spec it follows, as the results record it ("not recorded" for files
    written before `protocol_source` existed); empty when no run of the benchmark records one."""
    if not any(run.get("protocol_source") for run in runs):
        return {}
    sources: dict[str, str] = {}
    for run in runs:
        protocol = str(effective_protocol(run))
        if run.get("protocol_source") or protocol not in sources:
            sources[protocol] = str(run.get("protocol_source") or "not recorded")
    return dict(sorted(sources.items()))


def _benchmark_constant(benchmark: str, name: str) -> Any:
    """A protocol constant of the benchmark's module (`evals.<benchmark>`), None when it has none."""
    try:
        module = importlib.import_module(f"evals.{benchmark}")
    except ImportError:
        return None
    return getattr(module, name, None)


def _category_names(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Category key → name (LoCoMo: 1 multi_hop, ...): from the results, else the benchmark's module,
    so tables of runs written before results named them still do."""
    names = {str(k): v for k, v in (_benchmark_constant(runs[0]["benchmark"], "CATEGORY_NAMES") or {}).items()}
    for run in runs:
        for summary in run["conditions"].values():
            names.update(summary.get("category_names") or {})
    return names


def _named_metrics(summary: dict[str, Any]) -> list[str]:
    """A condition's metrics besides `overall`, minus the one `overall` is a copy of (the first)."""
    names = [k for k, v in summary.items() if isinstance(v, (int, float)) and k != "overall" and not _is_count(k)]
    return names[1:] if names and summary.get(names[0]) == summary.get("overall") else names


def _categories(summary: dict[str, Any]) -> list[str]:
    """Category keys of a breakdown worth showing (not a single `None` bucket)."""
    keys = list(summary.get("per_category", {}))
    return [] if keys in ([], ["None"]) else keys


def _is_count(name: str) -> bool:
    return name == "n" or name.startswith("n_")


def _row_labels(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The method name, or `method [run folder]` where several runs of one benchmark share a method
    (two adapters of one δ-mem variant, one baseline under two settings)."""
    names = [r["method"] for r in runs]
    return [n if names.count(n) == 1 else f"{n} [{Path(r['run_dir']).name}]" for n, r in zip(names, runs)]


def _ordered_union(groups: Any) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(group))
    return list(seen)


def _main_value(summary: dict[str, Any]) -> float | None:
    numbers = [v for k, v in summary.items() if not _is_count(k) and isinstance(v, (int, float))]
    return numbers[0] if numbers else None


def _ordered_conditions(runs: Sequence[dict[str, Any]]) -> list[str]:
    order = list(PROMPT_CONDITIONS)
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
