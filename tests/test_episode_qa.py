"""The dev split of a training source as a benchmark (`benchmark=episode_qa`): contexts, prompts,
scores, the split override, and a δ-mem run under the wrong-history control."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from evals.episode_qa import EpisodeQA, with_split
from evals.runner import EvalRunner
from evals.types import BenchmarkDataError

from test_eval_runner import memory_method
from test_param_counts import compose_cfg

RECORDS = [
    {
        "id": "doc1:q1",
        "messages": [
            {"role": "system", "content": "You read documents."},
            {"role": "user", "content": "Document 1: the tower is in Paris."},
            {"role": "user", "content": "Document 2: the arena is in Rome."},
            {"role": "user", "content": "Question: where is the tower?"},
            {"role": "assistant", "content": "Paris"},
        ],
        "answer": "Paris",
        "meta": {"source": "covidqa"},
    },
    {
        "id": "doc2:q1",
        "messages": [
            {"role": "user", "content": "Ross: I named him Ben."},
            {"role": "user", "content": "Question: what is the baby called?"},
            {"role": "assistant", "content": "Ben"},
        ],
        "answer": "Ben",
        "meta": {"source": "friendsqa"},
    },
]


def test_contexts_prompts_and_scores():
    redraw = {**RECORDS[0], "id": "doc1:q1:draw1", "meta": {"source": "covidqa", "question_id": "doc1:q1"}}
    first = {**RECORDS[0], "meta": {"source": "covidqa", "question_id": "doc1:q1"}}
    bench = EpisodeQA([first, RECORDS[1], redraw])  # a repeated draw of one question is scored once
    contexts, items = bench.load()
    assert [c.id for c in contexts] == ["doc1:q1", "doc2:q1"]
    assert [i.category for i in items] == ["covidqa", "friendsqa"]
    assert [m["content"][:10] for m in bench.history_messages(contexts[0])] == ["Document 1", "Document 2"]
    memory_only = bench.prompt(items[0], contexts[0], "memory_only")
    assert memory_only == [RECORDS[0]["messages"][0], RECORDS[0]["messages"][3]]  # the read pass exactly
    assert bench.prompt(items[0], contexts[0], "no_context") == memory_only
    full = bench.prompt(items[0], contexts[0], "full_context")
    assert full == RECORDS[0]["messages"][:4]
    assert bench.prompt(items[1], contexts[1], "full_context")[0]["role"] == "user"  # no system prompt there
    assert bench.score("The  Paris.\nmore", items[0]) == {"f1": 1.0, "em": 1.0}  # first line, SQuAD normalised
    assert bench.score("paris in france", items[0]) == {"f1": pytest.approx(0.5), "em": 0.0}
    rows = [{"category": "covidqa", "f1": 1.0, "em": 1.0}, {"category": "friendsqa", "f1": 0.5, "em": 0.0}]
    assert bench.aggregate(rows)["overall"] == 75.0 and bench.aggregate(rows)["em"] == 50.0
    with pytest.raises(ValueError, match="unknown condition"):
        bench.prompt(items[0], contexts[0], "memory_only_wrong_history")  # the runner maps controls first


def test_malformed_record_is_named():
    bad = [{"id": "x", "messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]}]
    with pytest.raises(BenchmarkDataError, match=r"episode 0 \(x\): must end with a user question"):
        EpisodeQA(bad).load()


def test_split_override_reaches_nested_sources():
    config = OmegaConf.create(
        {
            "_target_": "blend",
            "split": "train",
            "sources": {"a": {"_target_": "x", "split": "train", "path": "p"}, "b": {"_target_": "y", "split": "all"}},
        }
    )
    changed = with_split(config, "dev")
    assert changed.split == "dev" and changed.sources.a.split == "dev" and changed.sources.b.split == "dev"
    assert config.sources.a.split == "train"  # the original is untouched


def test_config_scores_the_training_sources_dev_split():
    cfg = compose_cfg("benchmark=episode_qa", "train_data=synthetic", "train_data.num_episodes=3")
    bench = instantiate(cfg.benchmark.loader)
    contexts, items = bench.load()
    assert len(items) == 3 and all(i.id.startswith("synthetic-dev-") for i in items)
    assert list(cfg.benchmark.conditions) == ["no_context", "memory_only", "memory_only_wrong_history", "full_context"]


def test_deltamem_dev_run_with_the_control(tmp_path):
    cfg = compose_cfg("benchmark=episode_qa", "train_data=synthetic", "train_data.num_episodes=4")
    bench = instantiate(cfg.benchmark.loader)
    conditions = ["no_context", "memory_only", "memory_only_wrong_history", "full_context"]
    results = EvalRunner(bench, memory_method(), conditions, tmp_path, questions_per_call=4, progress=False).run()
    assert set(results["conditions"]) == set(conditions)
    assert all(results["conditions"][c]["n"] == 4 for c in conditions)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {r["history_from"] for r in rows if "history_from" in r} == {
        f"synthetic-dev-0-{i}" for i in range(4)
    }
