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


# ------------------------------------------------------------------ the figure kinds of task.figures
def table_values(run_dirs: list) -> dict[tuple[str, str], float]:
    """(run folder, condition) → overall, as `task=table`'s CSV gives it."""
    import csv
    import io

    from evals.tables import build_tables

    _, csv_text = build_tables([Path(r) for r in run_dirs])
    rows = csv.DictReader(io.StringIO(csv_text))
    return {(r["run_dir"], r["condition"]): float(r["value"]) for r in rows if r["metric"] == "overall"}


def assert_written(stem: Path, data: dict) -> None:
    """PNG and SVG non-empty and well formed; the JSON holds exactly the values returned."""
    import xml.etree.ElementTree as ElementTree

    png, svg = Path(f"{stem}.png"), Path(f"{stem}.svg")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    assert ElementTree.parse(svg).getroot().tag.endswith("svg")
    assert json.loads(Path(f"{stem}.json").read_text()) == json.loads(json.dumps(data))


def run_plot(tmp_path: Path, figures: str, *extra: str):
    cfg = compose_cfg("task=plot", f"task.figures={figures}", f"task.out_dir={tmp_path / 'figures'}", *extra)
    return instantiate(cfg.task)(cfg)


def test_condition_figure_bars_are_the_table_numbers_with_bootstrap_cis(runs, tmp_path):
    from evals.paired import compare_runs

    series = (
        f"[{{label: frozen, runs: ['{runs['frozen']}', '{runs['hot_frozen']}']}},"
        f" {{label: 'δ-mem', runs: ['{runs['s0']}', '{runs['hot_memory']}']}}]"
    )
    figures = f"[{{_target_: evals.figures_bars.ConditionFigure, name: conditions, series: {series}, n_boot: 300}}]"
    data = run_plot(tmp_path, figures)["conditions"]
    assert_written(tmp_path / "figures" / "conditions", data)
    bars = data["bars"]
    got = [(b["benchmark"], b["condition"], b["series"]) for b in bars]
    assert got == [
        ("locomo", "full_context", "frozen"), ("locomo", "no_context", "frozen"),
        ("locomo", "memory_only", "δ-mem"), ("locomo", "memory_only_wrong_history", "δ-mem"),
        ("hotpotqa", "no_context", "frozen"), ("hotpotqa", "memory_only", "δ-mem"),
    ]  # fmt: skip
    table = table_values([runs[k] for k in ("frozen", "s0", "hot_frozen", "hot_memory")])
    for bar in bars:
        assert bar["height"] == pytest.approx(table[(bar["runs"][0], bar["condition"])])
        assert bar["ci_low"] <= bar["height"] <= bar["ci_high"]
    assert [b["height"] for b in bars] == pytest.approx([250 / 3, 50 / 3, 75.0, 25 / 3, 25.0, 50.0])
    assert [b["protocol"] for b in bars] == ["paper_v0"] * 4 + ["official"] * 2
    paired = compare_runs(runs["hot_memory"], "memory_only", runs["hot_frozen"], "no_context", n_boot=300)
    assert (bars[5]["height"], bars[4]["height"]) == pytest.approx((paired["mean_a"], paired["mean_b"]))
    again = bar_stats([{"label": "x", "run": str(runs["s0"]), "condition": "memory_only"}], n_boot=300)[0]
    assert (bars[2]["ci_low"], bars[2]["ci_high"]) == pytest.approx((again["ci_low"], again["ci_high"]))


def test_condition_figure_from_folders_has_a_series_per_method(runs, tmp_path):
    from evals.figures_bars import ConditionFigure, series_from_runs

    found = series_from_runs(str(tmp_path))
    assert [s["label"] for s in found] == ["vanilla", "deltamem", "deltamem [s0]", "deltamem [s1]"]  # folder order
    assert found[0]["runs"] == [str(runs["frozen"]), str(runs["hot_frozen"])]
    figure = ConditionFigure(runs=str(tmp_path), conditions=["memory_only"], benchmarks=["locomo"], n_boot=100)
    data = figure.render(tmp_path / "out" / "memory")
    assert [(b["series"], b["height"]) for b in data["bars"]] == pytest.approx([("deltamem [s0]", 75.0),
                                                                               ("deltamem [s1]", 50.0)])  # fmt: skip
    assert_written(tmp_path / "out" / "memory", data)
    other = make_run(tmp_path / "v0" / "hot", "hotpotqa", "paper", "vanilla", hotpot_rows("no_context", [1], [1]))
    mixed = ConditionFigure(series=[{"label": "a", "runs": str(runs["hot_frozen"])}, {"label": "b", "runs": [other]}])
    with pytest.raises(ValueError, match="different protocols"):
        mixed.data()


def test_recovery_as_a_figure_entry_equals_the_bars_task(runs, tmp_path):
    bars = (
        f"[{{label: frozen, run: '{runs['frozen']}', condition: no_context}},"
        f" {{label: dm, run: ['{runs['s0']}', '{runs['s1']}'], condition: memory_only}}]"
    )
    figures = f"[{{_target_: evals.figures.RecoveryFigure, name: rec, bars: {bars}, n_boot: 200}}]"
    drawn = run_plot(tmp_path, figures, f"task.bars={bars}", f"task.out={tmp_path / 'legacy'}", "task.n_boot=200")
    assert drawn["rec"]["bars"] == drawn["recovery"] == json.loads((tmp_path / "legacy.json").read_text())
    assert_written(tmp_path / "figures" / "rec", drawn["rec"])


def sweep_job(root: Path, job: str, setting: dict, rows: list[dict]) -> Path:
    """A task=train_eval job folder: config.yaml with the swept setting, the evaluation in eval/."""
    from omegaconf import OmegaConf

    (root / job).mkdir(parents=True)
    (root / job / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"memory": setting})))
    return make_run(root / job / "eval", "hotpotqa", "official", "deltamem_tsw", rows)


def test_rank_curves_are_the_table_numbers_per_setting_with_seeds_averaged(tmp_path):
    settings = {  # job: (rank, memory_only EM; rank 4 also ran no_context)
        "rank=16": (16, [1, 1, 0, 1]), "rank=4": (4, [0, 0, 0, 1]), "rank=8_s0": (8, [1, 0, 0, 1]),
        "rank=8_s1": (8, [1, 1, 1, 1]),
    }  # fmt: skip
    jobs = {}
    for job, (rank, em) in settings.items():
        rows = hotpot_rows("memory_only", em, [1] * 4)
        rows += hotpot_rows("no_context", [0] * 4, [0] * 4) if rank == 4 else []
        jobs[job] = sweep_job(tmp_path / "sweep", job, {"rank": rank}, rows)
    figures = (
        f"[{{_target_: evals.figures_curves.AblationCurves, name: rank, runs: '{tmp_path / 'sweep'}', x: memory.rank,"
        " n_boot: 200}]"
    )
    data = run_plot(tmp_path, figures)["rank"]
    assert_written(tmp_path / "figures" / "rank", data)
    assert data["x"] == "memory.rank" and data["x_values"] == [4, 8, 16]
    got = [(p["condition"], p["x"], p["height"]) for p in data["points"]]
    assert got == pytest.approx([("no_context", 4, 0.0), ("memory_only", 4, 25.0), ("memory_only", 8, 75.0),
                                 ("memory_only", 16, 75.0)])  # fmt: skip
    table = table_values([str(j) for j in jobs.values()])
    assert data["points"][1]["height"] == table[(str(jobs["rank=4"]), "memory_only")]
    seeds = [table[(str(jobs[j]), "memory_only")] for j in ("rank=8_s0", "rank=8_s1")]
    assert data["points"][2]["run_values"] == seeds and data["points"][2]["height"] == sum(seeds) / 2
    assert data["points"][2]["runs"] == [str(jobs["rank=8_s0"]), str(jobs["rank=8_s1"])]
    assert all(p["ci_low"] <= p["height"] <= p["ci_high"] for p in data["points"])


def test_depth_curves_follow_the_given_order_and_name_a_missing_setting(tmp_path):
    from evals.figures_curves import AblationCurves, config_value

    for band, em in [("upper_third", [1, 0, 0, 0]), ("all", [1, 1, 0, 0]), ("lower_third", [0, 0, 0, 0])]:
        sweep_job(tmp_path / "depth", f"layers={band}", {"layers": band}, hotpot_rows("memory_only", em, em))
    order = ["lower_third", "middle_third", "upper_third", "all"]
    figure = AblationCurves(runs=str(tmp_path / "depth"), x="memory.layers", order=order, n_boot=100)
    data = figure.render(tmp_path / "d")
    assert data["x_values"] == ["lower_third", "upper_third", "all"]
    assert [p["height"] for p in data["points"]] == [0.0, 25.0, 50.0]
    assert_written(tmp_path / "d", data)
    assert config_value(tmp_path / "depth" / "layers=all" / "eval", "memory.layers") == "all"
    with pytest.raises(KeyError, match="no config file holds 'memory.rank'"):
        config_value(tmp_path / "depth" / "layers=all" / "eval", "memory.rank")
    with pytest.raises(ValueError, match=r"not in order"):
        AblationCurves(runs=str(tmp_path / "depth"), x="memory.layers", order=["all"]).data()


def speed_report(path: Path, benchmark: str, key: str, cases: dict, memory: str = "tsw") -> Path:
    """A benchmarks/*.py --json report: {length: {variant: tokens/s or "oom"}}."""
    report = {
        "benchmark": benchmark,
        "env": {"device": "cuda", "device_name": "NVIDIA H200"},
        "args": {"backbone": "qwen3_4b", "memory": memory},
        "cases": [
            {
                "name": f"B=1 T={length}",
                "params": {"batch": 1, key: length},
                "variants": {
                    name: {"status": "oom"} if speed == "oom"
                    else {"status": "ok", "tokens_per_s": speed, "median_s": length / speed}
                    for name, speed in variants.items()
                },
            }
            for length, variants in cases.items()
        ],
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    return path


def test_throughput_lines_are_the_reports_tokens_per_second(tmp_path):
    from evals.figures_throughput import ThroughputFigure

    speed = tmp_path / "speed"
    speed_report(speed / "prefill_tsw.json", "prefill", "length",
                 {1024: {"frozen": 2e4, "deltamem": 1e4}, 8192: {"frozen": 4e4, "deltamem": 3.5e4}})  # fmt: skip
    speed_report(speed / "prefill_32k.json", "prefill", "length", {32768: {"frozen": 3e4, "deltamem": "oom"}})
    speed_report(speed / "decode.json", "decode", "prompt", {4096: {"frozen_graph": 90.0, "deltamem_graph": 87.0}})
    (speed / "logs_summary.json").write_text(json.dumps({"note": "not a report", "logs": []}))
    figures = f"[{{_target_: evals.figures_throughput.ThroughputFigure, name: prefill, sources: '{speed}'}}]"
    data = run_plot(tmp_path, figures)["prefill"]
    assert_written(tmp_path / "figures" / "prefill", data)
    got = [(p["line"], p["x"], p["tokens_per_s"]) for p in data["points"]]
    assert got == [("deltamem", 1024, 1e4), ("deltamem", 8192, 3.5e4), ("frozen", 1024, 2e4), ("frozen", 8192, 4e4),
                   ("frozen", 32768, 3e4)]  # fmt: skip
    assert [(s["variant"], s["x"], s["status"]) for s in data["skipped"]] == [("deltamem", 32768, "oom")]
    decode = ThroughputFigure(sources=str(speed / "decode.json"), benchmark="decode", line="{method} ({backend})")
    decode = decode.data()
    assert [(p["line"], p["x"], p["tokens_per_s"]) for p in decode["points"]] == [
        ("deltamem (graph)", 4096, 87.0), ("frozen (graph)", 4096, 90.0)]  # fmt: skip
    speed_report(speed / "prefill_msw.json", "prefill", "length", {1024: {"frozen": 2.1e4}}, memory="msw")
    with pytest.raises(ValueError, match="comes from both"):
        ThroughputFigure(sources=str(speed)).data()
    apart = ThroughputFigure(sources=str(speed), line="{variant} {memory}").data()
    assert ("frozen msw", 1024, 2.1e4) in [(p["line"], p["x"], p["tokens_per_s"]) for p in apart["points"]]


def test_throughput_reads_a_committed_benchmark_report(tmp_path):
    from evals.figures_throughput import ThroughputFigure

    from conftest import REPO_ROOT

    path = REPO_ROOT / "results" / "benchmarks" / "2026-11-25_h100" / "prefill.json"
    report = json.loads(path.read_text())
    data = ThroughputFigure(sources=str(path), name="h100").render(tmp_path / "h100")
    expected = sorted(
        (name, case["params"]["length"], timing["tokens_per_s"])
        for case in report["cases"]
        for name, timing in case["variants"].items()
        if timing["status"] == "ok"
    )
    assert [(p["line"], p["x"], p["tokens_per_s"]) for p in data["points"]] == expected and len(expected) == 6
    assert_written(tmp_path / "h100", data)


def test_figures_need_distinct_names(runs, tmp_path):
    spec = f"{{_target_: evals.figures_bars.ConditionFigure, runs: '{runs['hot_frozen']}', n_boot: 50}}"
    with pytest.raises(ValueError, match="two figures are named 'conditions'"):
        run_plot(tmp_path, f"[{spec}, {spec}]")


def test_the_replication_preset_rebuilds_the_committed_condition_figure(tmp_path):
    from conftest import REPO_ROOT

    study = REPO_ROOT / "results" / "2026-12-03_h200_s10"
    frozen = REPO_ROOT / "results" / "2026-12-03_h200_s9" / "frozen"
    cfg = compose_cfg("task=plot_replication", f"task.runs.study={study}", "task.runs.selected=tsw_lr1e-3",
                      f"task.runs.frozen={frozen}", f"task.out_dir={tmp_path}")  # fmt: skip
    bars = instantiate(cfg.task)(cfg)["conditions"]["bars"]
    committed = json.loads((study / "conditions.json").read_text())["bars"]
    keys = ("benchmark", "series", "condition", "height", "ci_low", "ci_high", "n", "n_clusters")
    assert [{k: b[k] for k in keys} for b in bars] == [{k: b[k] for k in keys} for b in committed]
    runs = [frozen / "eval_hotpotqa", frozen / "eval_locomo"]
    runs += [study / "tsw_lr1e-3" / "eval_hotpotqa", study / "tsw_lr1e-3" / "eval_locomo"]
    table = table_values([str(r) for r in runs])
    assert [b["height"] for b in bars] == pytest.approx([table[(b["runs"][0], b["condition"])] for b in bars])
    assert len(bars) == 10
    assert {b["condition"] for b in bars if b["series"] == "frozen"} == {"no_context", "full_context"}


def test_the_arms_preset_rebuilds_session_13s_committed_figure(tmp_path):
    from conftest import REPO_ROOT

    study = REPO_ROOT / "results" / "2026-12-04_h200_s13"
    frozen = REPO_ROOT / "results" / "2026-12-03_h200_s9" / "frozen"
    arms = ["tsw_lr1e-3", "msw_lr1e-3", "ssw_lr1e-3"]
    cfg = compose_cfg("task=plot_replication_arms", f"task.runs.study={study}", f"task.runs.arms=[{','.join(arms)}]",
                      f"task.runs.frozen={frozen}", f"task.out_dir={tmp_path}")  # fmt: skip
    bars = instantiate(cfg.task)(cfg)["conditions"]["bars"]
    committed = json.loads((study / "conditions.json").read_text())["bars"]
    keys = ("benchmark", "series", "condition", "height", "ci_low", "ci_high", "n", "n_clusters")
    assert [{k: b[k] for k in keys} for b in bars] == [{k: b[k] for k in keys} for b in committed]
    assert list(dict.fromkeys(b["series"] for b in bars)) == ["frozen", *(f"δ-mem {arm}" for arm in arms)]
    assert len(bars) == 3 + 3 * (4 + 3)  # frozen: HotpotQA 2 + LoCoMo 1; each arm: 4 + 3 conditions
    msw_memory = next(b for b in bars if b["series"] == "δ-mem msw_lr1e-3" and b["condition"] == "memory_only"
                      and b["benchmark"] == "hotpotqa")  # fmt: skip
    assert msw_memory["height"] == pytest.approx(15.8)  # docs/RESULTS.md, session 13
    with pytest.raises(Exception, match="name at least one arm"):
        compose_cfg("task=plot_replication_arms", f"task.runs.study={study}", "task.runs.arms=[]",
                    f"task.runs.frozen={frozen}").task.figures[0].series  # fmt: skip
