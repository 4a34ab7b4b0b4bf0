"""The no-context recovery figure: bar heights are the runs' results, error bars bootstrap CIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from evals.figures import average_over_runs, bar_stats, plot_recovery

from test_paired import locomo_rows, make_run
from test_param_counts import compose_cfg


def hotpot_rows(condition: str, em: list[float], f1: list[float]) -> list[dict]:
    """HotpotQA-like predictions: one question per context."""
    return [
        {"id": f"h{k}", "condition": condition, "context_id": f"h{k}", "category": "bridge", "output": "x",
         "scores": {"em": e, "f1": f}}
        for k, (e, f) in enumerate(zip(em, f1))
    ]


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    frozen = locomo_rows("no_context", {"q1": 0.0, "q2": 0.5, "q3": 0.0, "q4": 0.0})
    frozen += locomo_rows("full_context", {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 0.5})
    seed0 = locomo_rows("memory_only", {"q1": 1.0, "q2": 0.5, "q3": 1.0, "q4": 0.75})
    seed0 += locomo_rows("memory_only_wrong_history", {"q1": 0.0, "q2": 0.0, "q3": 1.0, "q4": 0.25})
    seed1 = locomo_rows("memory_only", {"q1": 0.5, "q2": 0.5, "q3": 0.0, "q4": 0.5})
    hot_frozen = hotpot_rows("no_context", [0, 0, 1, 0], [0.5, 0, 1, 0])
    hot_memory = hotpot_rows("memory_only", [1, 0, 1, 0], [1, 0.5, 1, 0.5])
    return {
        "frozen": make_run(tmp_path / "frozen", "locomo", "paper", "vanilla", frozen),
        "s0": make_run(tmp_path / "s0", "locomo", "paper", "deltamem", seed0),
        "s1": make_run(tmp_path / "s1", "locomo", "paper", "deltamem", seed1),
        "hot_frozen": make_run(tmp_path / "hot_frozen", "hotpotqa", "official", "vanilla", hot_frozen),
        "hot_memory": make_run(tmp_path / "hot_memory", "hotpotqa", "official", "deltamem", hot_memory),
    }


def bar_specs(runs: dict[str, Path]) -> list[dict]:
    return [
        {"label": "frozen no_context", "run": str(runs["frozen"]), "condition": "no_context"},
        {"label": "δ-mem memory_only", "run": [str(runs["s0"]), str(runs["s1"])], "condition": "memory_only"},
        {"label": "frozen full_context", "run": str(runs["frozen"]), "condition": "full_context"},
        {"label": "δ-mem wrong history", "run": str(runs["s0"]), "condition": "memory_only_wrong_history"},
        {"label": "frozen no_context", "run": str(runs["hot_frozen"]), "condition": "no_context"},
        {"label": "δ-mem memory_only", "run": str(runs["hot_memory"]), "condition": "memory_only"},
    ]


def test_bar_heights_are_the_results_numbers(runs, tmp_path):
    png = tmp_path / "fig" / "recovery.png"
    bars = plot_recovery(bar_specs(runs), png, n_boot=500)
    # LoCoMo (category 5 = q3 out): 0.5/3; seeds 75 and 50 -> 62.5; 2.5/3; 0.25/3. HotpotQA EM: 1/4, 2/4.
    expected = [50 / 3, 62.5, 250 / 3, 25 / 3, 25.0, 50.0]
    assert [b["height"] for b in bars] == pytest.approx(expected)
    for bar, run_dir in zip(bars[:3], [runs["frozen"], runs["s0"], runs["frozen"]]):
        results = json.loads((Path(run_dir) / "results.json").read_text())
        assert bar["run_values"][0] == results["conditions"][bar["condition"]]["f1"]
    assert bars[1]["run_values"] == pytest.approx([75.0, 50.0])
    # seed-averaged items: A = {q1 .75, q2 .5}, B = {q4 .625}; every resample averages to 62.5
    assert (bars[1]["ci_low"], bars[1]["ci_high"]) == pytest.approx((62.5, 62.5))
    assert [b["metric"] for b in bars] == ["f1"] * 4 + ["em"] * 2
    assert [b["n_clusters"] for b in bars] == [2, 2, 2, 2, 4, 4]
    assert all(b["ci_low"] <= b["height"] <= b["ci_high"] for b in bars)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
    assert "<svg" in png.with_suffix(".svg").read_text()


def test_plot_from_saved_rows_and_metric_override(runs, tmp_path):
    rows = bar_stats(bar_specs(runs)[4:], metric="f1", n_boot=200)
    assert [r["height"] for r in rows] == pytest.approx([37.5, 75.0])
    saved = tmp_path / "bars.json"
    saved.write_text(json.dumps(rows))
    assert plot_recovery(saved, tmp_path / "again.png") == rows
    assert (tmp_path / "again.png").stat().st_size > 0


def test_seeds_with_different_questions_are_refused(runs):
    rows = [{"id": "q1", "f1": 1.0}, {"id": "q2", "f1": 0.0}]
    assert average_over_runs([rows, rows[::-1]], "f1") == [
        {"id": "q1", "context_id": None, "category": None, "f1": 1.0},
        {"id": "q2", "context_id": None, "category": None, "f1": 0.0},
    ]
    with pytest.raises(ValueError, match="different questions"):
        average_over_runs([rows, rows[:1]], "f1")
    with pytest.raises(ValueError, match="mixes benchmarks"):
        bar_stats([{"label": "x", "run": [str(runs["s0"]), str(runs["hot_memory"])], "condition": "memory_only"}])


def test_plot_task_writes_png_svg_json(runs, tmp_path):
    out = tmp_path / "figures" / "recovery"
    bars = (
        f"[{{label: frozen, run: '{runs['frozen']}', condition: no_context}},"
        f" {{label: dm, run: ['{runs['s0']}', '{runs['s1']}'], condition: memory_only}}]"
    )
    cfg = compose_cfg("task=plot", f"task.bars={bars}", f"task.out={out}", "task.n_boot=200")
    rows = instantiate(cfg.task)(cfg)
    assert [r["height"] for r in rows] == pytest.approx([50 / 3, 62.5])
    assert Path(f"{out}.png").stat().st_size > 0 and Path(f"{out}.svg").stat().st_size > 0
    assert json.loads(Path(f"{out}.json").read_text())[1]["runs"] == [str(runs["s0"]), str(runs["s1"])]
