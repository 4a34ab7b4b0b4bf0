"""What an evaluation sends to its loggers (`evals.wandb_report`): scalars keyed
<benchmark>/<condition>/[<category>/]<metric> with the cost columns, and for W&B a table of the
per-question predictions; read back from an offline W&B run, and from the CSV logger's file."""

from __future__ import annotations

import csv
import json

import pytest
from hydra import compose, initialize_config_dir

from deltamem.run_logs import stable_run_id
from evals.predictions import read_rows
from evals.tasks import evaluate
from evals.wandb_report import predictions_table, summary_scalars

from conftest import REPO_ROOT

LOCOMO_LIKE = {
    "benchmark": "locomo",
    "method": "bm25_rag",
    "method_cost": {"extra_trainable_params": 0, "unit": "turn", "chunks_per_context_mean": 2.5},
    "conditions": {
        "memory_only": {
            "overall": 7.0, "f1": 7.0, "n": 3, "protocol": "paper",
            "per_category": {"1": {"f1": 5.0, "n": 2}, "5": {"f1": 36.0, "n": 1}},
            "category_names": {"1": "multi_hop", "5": "adversarial"},
            "cost": {"prompt_tokens_mean": 725.18, "output_tokens_mean": 20.58, "truncated_questions": 1},
        },
    },
    "timing": {
        "wall_seconds_this_process": 3.5,
        "memory_only": {"answer_seconds_total": 2.0, "memorize_seconds_total": 0.5},
    },
}  # fmt: skip


def test_scalars_name_benchmark_condition_category_and_cost():
    assert summary_scalars(LOCOMO_LIKE) == {
        "locomo/memory_only/overall": 7.0,
        "locomo/memory_only/f1": 7.0,
        "locomo/memory_only/n": 3,
        "locomo/memory_only/multi_hop/f1": 5.0,
        "locomo/memory_only/multi_hop/n": 2,
        "locomo/memory_only/adversarial/f1": 36.0,
        "locomo/memory_only/adversarial/n": 1,
        "locomo/memory_only/prompt_tokens_mean": 725.18,
        "locomo/memory_only/output_tokens_mean": 20.58,
        "locomo/memory_only/truncated_questions": 1,
        "locomo/memory_only/answer_seconds_total": 2.0,
        "locomo/memory_only/memorize_seconds_total": 0.5,
        "locomo/method_cost/extra_trainable_params": 0,
        "locomo/method_cost/chunks_per_context_mean": 2.5,
        "locomo/wall_seconds_this_process": 3.5,
    }


def test_other_breakdowns_nest_and_a_lone_none_category_is_left_out():
    hotpot = {
        "benchmark": "hotpotqa",
        "conditions": {
            "full_context": {
                "overall": 20.0, "em": 20.0, "f1": 30.0, "n": 5, "protocol_source": "x", "is_rebuild": True,
                "per_category": {"None": {"em": 20.0, "n": 5}},
                "per_level": {"easy": {"em": 50.0, "n": 2}},
            }
        },
    }  # fmt: skip
    mab = {  # MemoryAgentBench's macro average: categories hold columns
        "benchmark": "memory_agent_bench",
        "conditions": {
            "memory_only": {
                "overall": 40.0, "question_weighted": {"score": 41.0},
                "per_category": {"AR": {"score": 40.0, "columns": {"ruler_qa": {"score": 40.0, "n": 4}}}},
            }
        },
    }  # fmt: skip
    assert summary_scalars(hotpot) == {
        "hotpotqa/full_context/overall": 20.0,
        "hotpotqa/full_context/em": 20.0,
        "hotpotqa/full_context/f1": 30.0,
        "hotpotqa/full_context/n": 5,
        "hotpotqa/full_context/level/easy/em": 50.0,
        "hotpotqa/full_context/level/easy/n": 2,
    }
    assert summary_scalars(mab) == {
        "memory_agent_bench/memory_only/overall": 40.0,
        "memory_agent_bench/memory_only/question_weighted/score": 41.0,
        "memory_agent_bench/memory_only/AR/score": 40.0,
        "memory_agent_bench/memory_only/AR/columns/ruler_qa/score": 40.0,
        "memory_agent_bench/memory_only/AR/columns/ruler_qa/n": 4,
    }


def test_the_predictions_table_holds_every_field_of_the_rows():
    base = {"prompt_hash": "ab", "prompt_tokens": 10, "output_tokens": 3, "truncated_tokens": 0,
            "answer_seconds": 0.1, "memorize_seconds": 0.0, "seed": None}  # fmt: skip
    rows = [
        {"id": "q1", "condition": "memory_only", "context_id": "c1", "category": 1, "output": "paris",
         "scores": {"f1": 1.0}, **base},
        {"id": "q2", "condition": "memory_only_wrong_history", "context_id": "c2", "category": 5, "output": "no",
         "scores": {"f1": 0.0, "em": True}, "history_from": "c1", "item_meta": {"level": "easy"}, **base},
    ]  # fmt: skip
    columns, data = predictions_table(rows)
    assert columns == [
        "id", "condition", "context_id", "category", "output", "score_f1", "score_em", "prompt_tokens",
        "output_tokens", "truncated_tokens", "answer_seconds", "memorize_seconds", "seed", "prompt_hash",
        "history_from", "item_meta",
    ]  # fmt: skip
    assert data[0] == ["q1", "memory_only", "c1", "1", "paris", 1.0, None, 10, 3, 0, 0.1, 0.0, None, "ab", None, None]
    assert data[1][3] == "5" and data[1][5:7] == [0.0, 1.0]
    assert data[1][-2:] == ["c1", '{"level": "easy"}']


def eval_cfg(run_dir, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "~experiment",
                "task=eval",
                "benchmark.loader.num_episodes=3",
                "task.default_run_dir=null",  # Hydra's run directory: unresolvable without Hydra running
                "task.wandb_name=null",  # likewise (Hydra's choices)
                f"paths.output_dir={run_dir}",
                *overrides,
            ],
        )


def test_an_offline_wandb_run_gets_the_scores_costs_and_predictions_table(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is an optional logger (the GPU machines run without it)")
    from wandb_offline import offline_env, offline_runs

    offline_env(monkeypatch, tmp_path)
    run_dir = tmp_path / "run"
    name = "task.wandb_name=synthetic-vanilla-tiny"  # what conf/task/eval.yaml resolves to under Hydra
    cfg = eval_cfg(run_dir, "logger=wandb", "logger.wandb.offline=true", name)
    results = evaluate(cfg, conditions=["no_context", "full_context"], progress=False)
    (run,) = offline_runs(run_dir / "wandb")
    assert run.finished and run.run_id == stable_run_id(run_dir)
    assert (run.group, run.name) == ("adhoc", "synthetic-vanilla-tiny")  # no sweep, no experiment
    expected = summary_scalars(results)
    for condition in ("no_context", "full_context"):
        summary = results["conditions"][condition]
        assert expected[f"synthetic/{condition}/overall"] == summary["overall"]
        category = summary["per_category"]["stated_once"]
        assert expected[f"synthetic/{condition}/stated_once/accuracy"] == category["accuracy"]
        cost = summary["cost"] | results["timing"][condition]
        for name in ("prompt_tokens_mean", "output_tokens_mean", "truncated_questions", "answer_seconds_total"):
            assert expected[f"synthetic/{condition}/{name}"] == cost[name]
    assert {k: run.summary[k] for k in expected} == pytest.approx(expected)
    assert run.config["eval"]["method"] == "vanilla" and run.config["eval"]["fingerprint"] == results["fingerprint"]
    assert run.config["backbone"]["name"] == "tiny" and run.config["benchmark"]["conditions"]  # the resolved config
    table = run.table("synthetic/predictions")
    rows = read_rows(run_dir / "predictions.jsonl")
    assert table["columns"] == [
        "id", "condition", "context_id", "category", "output", "score_accuracy", "prompt_tokens", "output_tokens",
        "truncated_tokens", "answer_seconds", "memorize_seconds", "seed", "prompt_hash",
    ]  # fmt: skip
    assert len(table["data"]) == len(rows) == 2 * 3
    assert [r[:2] + [r[4], r[5]] for r in table["data"]] == [
        [r["id"], r["condition"], r["output"], r["scores"]["accuracy"]] for r in rows
    ]


def test_the_csv_logger_gets_the_same_scalars(tmp_path):
    run_dir = tmp_path / "run"
    results = evaluate(eval_cfg(run_dir, "logger=csv"), conditions=["no_context"], progress=False)
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    expected = summary_scalars(results)
    assert "synthetic/no_context/overall" in expected and row["step"] == "0"
    assert {k: float(row[k]) for k in expected} == pytest.approx({k: float(v) for k, v in expected.items()})
    assert json.loads((run_dir / "results.json").read_text())["conditions"] == results["conditions"]
