"""Score vectors, paired cluster-bootstrap Δ, and task=compare on hand-made runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from evals.paired import bootstrap_mean_ci, compare_runs, overall_exclusions, paired_delta, resampled_means
from evals.score_vectors import (
    SCORES_FILE,
    main_metric,
    read_score_vectors,
    score_vectors_from_predictions,
    write_score_vectors,
)
from evals.text_metrics import weighted_means

from conftest import REPO_ROOT
from test_param_counts import compose_cfg


def vectors(spec: dict[str, list[float]], metric: str = "f1", category: str = "1", condition: str = "x") -> list[dict]:
    """Score rows `{ctx}-{k}` from {context: [scores]}."""
    return [
        {"id": f"{ctx}-{k}", "condition": condition, "context_id": ctx, "category": category, metric: v}
        for ctx, values in spec.items()
        for k, v in enumerate(values)
    ]


A = vectors({"c1": [1, 1, 0], "c2": [0.5, 1], "c3": [0], "c4": [1, 1]})  # mean 5.5/8 = 68.75 %
B = vectors({"c1": [0, 1, 0], "c2": [0.5, 0], "c3": [1], "c4": [0, 0]})  # mean 2.5/8 = 31.25 %


def make_run(run_dir: Path, benchmark: str, protocol: str, method: str, rows: list[dict]) -> Path:
    """A run directory as the runner leaves it: predictions.jsonl (with text) + results.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    excluded = overall_exclusions(benchmark, protocol)
    metrics = tuple(rows[0]["scores"])
    conditions = {}
    for condition in dict.fromkeys(r["condition"] for r in rows):
        flat = [{"category": r["category"], **r["scores"]} for r in rows if r["condition"] == condition]
        means = weighted_means(flat, metrics, exclude_from_overall=excluded)
        conditions[condition] = {"overall": means[metrics[0]], **means}
    results = {"benchmark": benchmark, "protocol": protocol, "method": method, "conditions": conditions}
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def locomo_rows(condition: str, f1: dict[str, float]) -> list[dict]:
    """LoCoMo-like predictions: q1..q3 in conversation A (q3 adversarial, category 5), q4 in B."""
    layout = {"q1": ("A", "1"), "q2": ("A", "2"), "q3": ("A", "5"), "q4": ("B", "4")}
    return [
        {"id": q, "condition": condition, "context_id": ctx, "category": cat, "output": f"answer to {q}",
         "scores": {"f1": f1[q]}, "prompt_tokens": 10}
        for q, (ctx, cat) in layout.items()
    ]


def test_score_vectors_keep_ids_and_numbers_only_in_order(tmp_path):
    rows = locomo_rows("memory_only", {"q1": 1.0, "q2": 0.5, "q3": 1.0, "q4": 0.0})
    rows[1]["scores"]["flag"] = True
    rows[1]["scores"]["note"] = "text is dropped"
    make_run(tmp_path, "locomo", "paper", "deltamem", rows[:1])
    write_score_vectors(tmp_path, rows)
    back = read_score_vectors(tmp_path)
    assert [r["id"] for r in back] == ["q1", "q2", "q3", "q4"]
    expected = {"id": "q2", "condition": "memory_only", "context_id": "A", "category": "2", "f1": 0.5, "flag": 1.0}
    assert back[1] == expected
    assert "answer to" not in (tmp_path / SCORES_FILE).read_text()
    assert main_metric(back) == "f1"
    with pytest.raises(ValueError, match="appears twice"):
        write_score_vectors(tmp_path, rows + rows[:1])


def test_score_vectors_rebuilt_from_predictions(tmp_path):
    rows = locomo_rows("no_context", {"q1": 0.25, "q2": 0.0, "q3": 1.0, "q4": 0.75})
    make_run(tmp_path, "locomo", "paper", "vanilla", rows)
    assert not (tmp_path / SCORES_FILE).exists()
    built = score_vectors_from_predictions(tmp_path)
    assert [r["f1"] for r in built] == [0.25, 0.0, 1.0, 0.75]
    assert read_score_vectors(tmp_path) == built
    with pytest.raises(FileNotFoundError, match="predictions.jsonl"):
        score_vectors_from_predictions(tmp_path / "nothing")


def test_delta_is_the_difference_of_means_matched_by_id():
    result = paired_delta(A, list(reversed(B)), "f1", n_boot=200)
    assert result.mean_a == 68.75 and result.mean_b == 31.25 and result.delta == 37.5
    assert (result.n, result.n_clusters) == (8, 4)
    assert result.ci_low <= result.delta <= result.ci_high


def test_identical_vectors_give_a_zero_interval():
    result = paired_delta(A, [dict(r) for r in A], "f1", n_boot=500, seed=3)
    assert (result.delta, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)
    assert (result.frac_le_0, result.frac_ge_0, result.p_value) == (1.0, 1.0, 1.0)


def test_seeded_interval_is_pinned_and_equals_a_naive_loop():
    result = paired_delta(A, B, "f1", n_boot=2000, seed=7)
    assert result.ci_low == pytest.approx(-100 / 3) and result.ci_high == pytest.approx(700 / 9)
    assert (result.frac_le_0, result.frac_ge_0) == (0.138, 0.9575)
    # the same draws, gathered item by item in a loop
    clusters = ["c1", "c2", "c3", "c4"]
    drawn = np.random.default_rng(7).integers(0, 4, size=(2000, 4))
    deltas = []
    for row in drawn:
        items = [k for c in row for k, r in enumerate(A) if r["context_id"] == clusters[c]]
        deltas.append(100 * (np.mean([A[k]["f1"] for k in items]) - np.mean([B[k]["f1"] for k in items])))
    assert np.quantile(deltas, [0.025, 0.975]) == pytest.approx([result.ci_low, result.ci_high])
    assert paired_delta(A, B, "f1", n_boot=2000, seed=7) == result


def test_resampled_means_weight_clusters_by_their_size():
    # cluster 0 = one item scoring 1, cluster 1 = three items scoring 0: a resample holds {0,0}, {1,1} or {0,1}
    means, k = resampled_means(np.array([1.0, 0.0, 0.0, 0.0]), np.array([0, 1, 1, 1]), 400, 0)
    assert k == 2 and means.shape == (1, 400)
    assert sorted(set(np.round(means[0], 12))) == [0.0, 0.25, 1.0]


def test_clustering_widens_the_interval_of_correlated_items():
    rng = np.random.default_rng(1)
    per_cluster = rng.uniform(-1, 1, size=10)  # within a cluster every item has the same difference
    a = [{"id": f"{c}-{k}", "context_id": str(c), "category": "1", "f1": 0.5 + per_cluster[c] / 2}
         for c in range(10) for k in range(10)]
    b = [{**r, "f1": 0.5} for r in a]
    clustered = paired_delta(a, b, "f1", "context_id", n_boot=4000, seed=0)
    plain = paired_delta(a, b, "f1", None, n_boot=4000, seed=0)
    assert clustered.delta == pytest.approx(plain.delta) and (clustered.n_clusters, plain.n_clusters) == (10, 100)
    ratio = (clustered.ci_high - clustered.ci_low) / (plain.ci_high - plain.ci_low)
    assert 2.0 < ratio < 4.5  # about sqrt(10) = 3.16 for perfectly correlated clusters of 10


def test_one_cluster_per_item_is_the_plain_paired_bootstrap():
    a = vectors({f"c{k}": [v] for k, v in enumerate([1, 0, 0.5, 1, 1, 0, 0.25])})
    b = vectors({f"c{k}": [v] for k, v in enumerate([0, 0, 1, 1, 0.5, 0, 0])})
    by_context = paired_delta(a, b, "f1", "context_id", n_boot=3000, seed=11)
    by_item = paired_delta(a, b, "f1", "id", n_boot=3000, seed=11)
    d = np.array([x["f1"] - y["f1"] for x, y in zip(a, b)])
    plain = 100 * d[np.random.default_rng(11).integers(0, 7, size=(3000, 7))].mean(axis=1)
    assert np.quantile(plain, [0.025, 0.975]) == pytest.approx([by_item.ci_low, by_item.ci_high])
    assert (by_context.ci_low, by_context.ci_high) == pytest.approx((by_item.ci_low, by_item.ci_high))


def test_different_questions_are_refused_unless_intersected():
    a = A + [{"id": "extra", "context_id": "c9", "category": "1", "f1": 1.0}]
    b = [r for r in B if r["id"] not in ("c1-0", "c1-1")]
    with pytest.raises(ValueError, match="0 id.s. missing on side a, 3 missing on side b"):
        paired_delta(a, b, "f1")
    result = paired_delta(a, b, "f1", intersect=True, n_boot=100)
    assert (result.n, result.missing_in_a, result.missing_in_b) == (6, 0, 3)
    assert result.mean_a == pytest.approx(100 * 3.5 / 6) and result.mean_b == pytest.approx(100 * 1.5 / 6)
    with pytest.raises(ValueError, match="appears twice"):
        paired_delta(A + A[:1], B, "f1")
    with pytest.raises(KeyError, match="lack metric 'em'"):
        paired_delta(A, B, "em")


def test_excluded_categories_leave_the_comparison():
    adversarial = [{"id": f"adv-{k}", "context_id": "c1", "category": "5"} for k in range(2)]
    a = A + [{**r, "f1": 1.0} for r in adversarial]
    b = B + [{**r, "f1": 0.0} for r in adversarial]
    kept = paired_delta(a, b, "f1", n_boot=100)
    assert (kept.n, kept.delta) == (10, pytest.approx(100 * (7.5 - 2.5) / 10))  # 50 points
    result = paired_delta(a, b, "f1", n_boot=100, exclude_categories=["5"])
    assert (result.n, result.delta, result.excluded_categories) == (8, 37.5, ["5"])


def test_bootstrap_mean_ci_of_constant_scores_is_a_point():
    result = bootstrap_mean_ci(vectors({"c1": [0.5, 0.5], "c2": [0.5]}), n_boot=300)
    assert (result.metric, result.mean, result.ci_low, result.ci_high, result.n, result.n_clusters) == (
        "f1", 50.0, 50.0, 50.0, 3, 2)


def locomo_runs(tmp_path: Path) -> tuple[Path, Path]:
    frozen = locomo_rows("no_context", {"q1": 0.0, "q2": 0.5, "q3": 0.0, "q4": 0.0})
    frozen += locomo_rows("full_context", {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 0.5})
    memory = locomo_rows("memory_only", {"q1": 1.0, "q2": 0.5, "q3": 1.0, "q4": 0.75})
    memory += locomo_rows("memory_only_wrong_history", {"q1": 0.0, "q2": 0.0, "q3": 1.0, "q4": 0.25})
    return make_run(tmp_path / "frozen", "locomo", "paper", "vanilla", frozen), make_run(
        tmp_path / "dm", "locomo", "paper", "deltamem", memory)


def test_compare_runs_uses_the_items_of_overall(tmp_path):
    frozen, memory = locomo_runs(tmp_path)
    e1 = compare_runs(memory, "memory_only", frozen, "no_context", n_boot=500)
    # category 5 (q3) is out: memory (1 + 0.5 + 0.75)/3 = 75 %, frozen 0.5/3 = 16.67 %
    assert (e1["benchmark"], e1["metric"], e1["n"], e1["n_clusters"]) == ("locomo", "f1", 3, 2)
    assert e1["mean_a"] == pytest.approx(75.0) and e1["delta"] == pytest.approx(75.0 - 50 / 3)
    assert e1["excluded_categories"] == ["5"]
    e2 = compare_runs(memory, "memory_only", memory, "memory_only_wrong_history", n_boot=500)
    assert e2["delta"] == pytest.approx(100 * (2.25 - 0.25) / 3)
    everything = compare_runs(memory, "memory_only", frozen, "no_context", exclude_categories=[], n_boot=10)
    assert everything["n"] == 4
    results = json.loads((memory / "results.json").read_text())
    results["conditions"]["memory_only"]["f1"] = 80.0
    (memory / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match="results.json says 80"):
        compare_runs(memory, "memory_only", frozen, "no_context", n_boot=10)


def test_compare_task_writes_markdown_csv_json(tmp_path):
    frozen, memory = locomo_runs(tmp_path)
    out = tmp_path / "tables" / "paired"
    comparisons = (
        f"[{{name: E1, a: {{run: '{memory}', condition: memory_only}}, b: {{run: '{frozen}', condition: no_context}}}},"
        f" {{name: E3, a: {{run: '{frozen}', condition: full_context}}, b: {{run: '{frozen}', condition: no_context}},"
        " cluster: id}]"
    )
    cfg = compose_cfg("task=compare", f"task.comparisons={comparisons}", f"task.out={out}", "task.n_boot=200")
    rows = instantiate(cfg.task)(cfg)
    assert [r["name"] for r in rows] == ["E1", "E3"]
    assert rows[1]["n_clusters"] == 3 and rows[1]["delta"] == pytest.approx(100 * (2.5 - 0.5) / 3)
    markdown = Path(f"{out}.md").read_text()
    assert "| name | benchmark | metric | Δ | 95% CI | n | clusters | mean a | mean b | p |" in markdown
    assert "| E1 | locomo | f1 | +58.33 |" in markdown
    assert Path(f"{out}.csv").read_text().splitlines()[0].startswith("name,benchmark,protocol,metric,delta")
    assert json.loads(Path(f"{out}.json").read_text())[0]["mean_b"] == pytest.approx(50 / 3)


def test_the_replication_preset_rebuilds_the_committed_endpoints(tmp_path):
    """conf/task/compare_replication.yaml on session 10's committed score vectors gives the Δs that
    results/2026-12-03_h200_s10/comparisons.json records (the means are exact; the CIs use fewer
    resamples here)."""
    study = REPO_ROOT / "results" / "2026-12-03_h200_s10"
    cfg = compose_cfg(
        "task=compare_replication", f"task.runs.study={study}", "task.runs.selected=tsw_lr1e-3",
        f"task.runs.frozen={REPO_ROOT / 'results' / '2026-12-03_h200_s9' / 'frozen'}",
        f"task.out={tmp_path / 'c'}", "task.n_boot=100",
    )
    rows = {r["name"]: r for r in instantiate(cfg.task)(cfg)}
    committed = {r["name"]: r for r in json.loads((study / "comparisons.json").read_text())}
    assert rows.keys() == committed.keys() and len(rows) == 16
    for name, row in rows.items():
        assert row["delta"] == pytest.approx(committed[name]["delta"], abs=1e-9), name
        assert row["n"] == committed[name]["n"], name
    assert rows["E1 HotpotQA EM"]["delta"] == pytest.approx(4.2)
    assert rows["E2 HotpotQA EM"]["delta"] == pytest.approx(-0.2)


@pytest.mark.parametrize("arm", ["tsw_lr1e-3", "msw_lr1e-3", "ssw_lr1e-3"])
def test_the_per_arm_preset_rebuilds_session_13s_committed_rows(tmp_path, arm):
    """conf/task/compare_replication_arm.yaml on session 13's committed score vectors gives the Δs of
    results/2026-12-04_h200_s13/comparisons/<arm>.json (exact means; fewer resamples here)."""
    study = REPO_ROOT / "results" / "2026-12-04_h200_s13"
    cfg = compose_cfg(
        "task=compare_replication_arm", f"task.runs.study={study}", f"task.runs.arm={arm}",
        f"task.runs.frozen={REPO_ROOT / 'results' / '2026-12-03_h200_s9' / 'frozen'}",
        f"task.out={tmp_path / arm}", "task.n_boot=100",
    )
    rows = {r["name"]: r for r in instantiate(cfg.task)(cfg)}
    committed = {r["name"]: r for r in json.loads((study / "comparisons" / f"{arm}.json").read_text())}
    assert rows.keys() == committed.keys() and len(rows) == 13
    for name, row in rows.items():
        assert row["delta"] == pytest.approx(committed[name]["delta"], abs=1e-9), name
        assert row["n"] == committed[name]["n"], name
    expected_d = {"tsw_lr1e-3": 1.17, "msw_lr1e-3": 2.20, "ssw_lr1e-3": 0.80}[arm]  # docs/RESULTS.md, session 13
    assert rows["dev D"]["delta"] == pytest.approx(expected_d, abs=0.005)


def test_a_preset_without_its_runs_names_the_missing_keys():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "src" / "run.py"), "task=compare_replication", "task.runs.selected=x"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "DELTAMEM_TRACEBACK": "0"},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: this command needs task.runs.frozen=..., task.runs.study=..."
    )


def test_an_arms_seeds_are_averaged_per_question_before_pairing(tmp_path):
    """The pre-registered primary analysis: per-question scores averaged over the evaluated seeds."""
    frozen, seed0 = locomo_runs(tmp_path)
    seed1 = make_run(tmp_path / "dm_s1", "locomo", "paper", "deltamem",
                     locomo_rows("memory_only", {"q1": 0.0, "q2": 1.0, "q3": 0.0, "q4": 0.25}))
    e1 = compare_runs([seed0, seed1], "memory_only", frozen, "no_context", n_boot=200)
    # per question (q3, category 5, out): q1 (1 + 0)/2, q2 (0.5 + 1)/2, q4 (0.75 + 0.25)/2 → 0.5, 0.75, 0.5
    assert e1["n"] == 3 and e1["mean_a"] == pytest.approx(100 * (0.5 + 0.75 + 0.5) / 3)
    assert e1["delta"] == pytest.approx(e1["mean_a"] - 50 / 3)
    assert e1["a"]["run"] == [str(seed0), str(seed1)]
    alone = compare_runs(seed1, "memory_only", frozen, "no_context", n_boot=200)
    assert alone["mean_a"] == pytest.approx(100 * 1.25 / 3)  # not the average: the check means something
    other = make_run(tmp_path / "dm_s2", "locomo", "paper", "deltamem",
                     [r for r in locomo_rows("memory_only", {"q1": 1, "q2": 1, "q3": 1, "q4": 1}) if r["id"] != "q4"])
    with pytest.raises(ValueError, match="side a: run 1 holds other questions than run 0 \\(e.g. 'q4'\\)"):
        compare_runs([seed0, other], "memory_only", frozen, "no_context", n_boot=10)
    comparisons = (f"[{{name: E1 seeds, a: {{run: ['{seed0}', '{seed1}'], condition: memory_only}},"
                   f" b: {{run: '{frozen}', condition: no_context}}}}]")
    cfg = compose_cfg("task=compare", f"task.comparisons={comparisons}", f"task.out={tmp_path / 'seeds'}",
                      "task.n_boot=200")
    (row,) = instantiate(cfg.task)(cfg)
    assert row["mean_a"] == pytest.approx(e1["mean_a"]) and row["delta"] == pytest.approx(e1["delta"])
    assert f"{seed0};{seed1}" in Path(f"{tmp_path / 'seeds'}.csv").read_text()  # the seeds named in the CSV


def test_the_seed_preset_averages_the_arms_seeds_and_reproduces_one_seeds_endpoints(tmp_path):
    """conf/task/compare_replication_seeds.yaml: with the same seed listed twice the averages are that
    seed's scores, so session 10's committed endpoints and session 11's IFEval Δ come back exactly."""
    arm = REPO_ROOT / "results" / "2026-12-03_h200_s10" / "tsw_lr1e-3"
    ifeval = REPO_ROOT / "results" / "2026-12-03_h200_s11" / "tsw_lr1e-3"
    cfg = compose_cfg(
        "task=compare_replication_seeds", f"task.runs.seeds=[{arm},{arm}]", f"task.runs.ifeval_seeds=[{ifeval}]",
        f"task.runs.frozen={REPO_ROOT / 'results' / '2026-12-03_h200_s9' / 'frozen'}",
        f"task.out={tmp_path / 'c'}", "task.n_boot=100",
    )
    rows = {r["name"]: r for r in instantiate(cfg.task)(cfg)}
    committed = {r["name"]: r for r in json.loads((arm.parent / "comparisons.json").read_text())}
    for name in ("E1 HotpotQA EM", "E2 HotpotQA EM", "E3 HotpotQA EM", "E1 HotpotQA F1", "E1 LoCoMo F1",
                 "E2 LoCoMo F1"):
        assert rows[name]["delta"] == pytest.approx(committed[name]["delta"], abs=1e-9), name
        assert rows[name]["a"]["run"] == [f"{arm}/eval_{rows[name]['benchmark']}"] * 2
    assert rows["no-harm IFEval prompt strict"]["delta"] == pytest.approx(22.00 - 25.14, abs=0.01)
