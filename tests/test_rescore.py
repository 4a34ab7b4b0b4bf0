"""task=rescore (evals/rescore.py): an evaluation's outputs scored again under another protocol, with
no generation; hand-checked on HotpotQA, whose "paper" and "paper_v0" protocols drop the official
yes/no rule ("paper" also rounds each F1 to 4 decimals)."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from evals.rescore import RescoreError

from conftest import compose_config


def hotpot(qid: str, answer: str) -> dict:
    return {"_id": qid, "question": f"question {qid}?", "answer": answer, "type": "comparison",
            "context": [["Alpha", ["Alpha is a town."]]], "supporting_facts": [["Alpha", 0]]}


def finished_run(tmp_path, outputs: dict[str, str]):
    data = tmp_path / "hotpot.json"
    data.write_text(json.dumps([hotpot("q1", "yes"), hotpot("q2", "Oslo")]))
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"id": qid, "condition": "full_context", "context_id": qid, "category": "comparison", "output": out,
             "scores": {"em": -1.0, "f1": -1.0}, "prompt_tokens": 10, "output_tokens": 3, "truncated_tokens": 0,
             "answer_seconds": 0.1, "memorize_seconds": 0.0} for qid, out in outputs.items()]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "results.json").write_text(json.dumps({"benchmark": "hotpotqa", "protocol": "official",
                                                  "method": "vanilla", "conditions": {}}))
    return data, run


def rescored(data, run, protocol, out):
    cfg = compose_config("task=rescore", "benchmark=hotpotqa", f"benchmark.loader.source={data}",
                         f"benchmark.loader.protocol={protocol}", f"task.run={run}", f"task.out={out}")
    return instantiate(cfg.task)(cfg)


def test_both_protocols_score_the_same_outputs(tmp_path):
    data, run = finished_run(tmp_path, {"q1": "yes it is", "q2": "Oslo, Norway"})
    official = rescored(data, run, "official", tmp_path / "official")
    v0 = rescored(data, run, "paper_v0", tmp_path / "paper_v0")
    paper = rescored(data, run, "paper", tmp_path / "paper")
    # q1: gold "yes"; official F1 is 0 unless the prediction is exactly yes, paper F1 = 2·(1/3·1)/(1/3+1) = 0.5
    # q2: "oslo norway" vs "oslo": F1 = 2·(1/2·1)/(1/2+1) = 2/3 under all three (paper: 0.6667); EM 0 everywhere
    assert official["conditions"]["full_context"]["f1"] == pytest.approx(100 * (0 + 2 / 3) / 2)
    assert v0["conditions"]["full_context"]["f1"] == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    assert paper["conditions"]["full_context"]["f1"] == pytest.approx(100 * (0.5 + 0.6667) / 2)  # 58.335
    assert official["conditions"]["full_context"]["em"] == paper["conditions"]["full_context"]["em"] == 0.0
    assert paper["protocol"] == "paper" and paper["rescored_from"] == {"run": str(run), "protocol": "official"}
    assert paper["protocol_source"].startswith("declare-lab/delta-Mem@5cd5d91 ")
    assert v0["protocol_source"] == "harness paraphrase, superseded 2026-12-03 (paper_v0)"
    vectors = [json.loads(line) for line in (tmp_path / "paper" / "scores.jsonl").read_text().splitlines()]
    assert [(v["id"], v["f1"]) for v in vectors] == [("q1", 0.5), ("q2", 0.6667)]
    assert json.loads((run / "results.json").read_text())["conditions"] == {}  # the run itself is untouched


def test_a_legacy_paper_run_is_named_paper_v0_when_rescored(tmp_path):
    data, run = finished_run(tmp_path, {"q1": "yes", "q2": "Oslo"})
    (run / "results.json").write_text(json.dumps({"benchmark": "hotpotqa", "protocol": "paper", "method": "vanilla",
                                                  "conditions": {}}))  # written before protocol_source existed
    again = rescored(data, run, "official", tmp_path / "official")
    assert again["rescored_from"] == {"run": str(run), "protocol": "paper_v0"}
    assert again["protocol"] == "official" and "hotpot_evaluate_v1" in again["protocol_source"]


def test_a_run_of_other_items_or_another_benchmark_is_refused(tmp_path):
    data, run = finished_run(tmp_path, {"q1": "yes", "q9": "no"})
    with pytest.raises(RescoreError, match=r"1 predictions .* \(first 'q9'\) are not items"):
        rescored(data, run, "paper", tmp_path / "out")
    (run / "results.json").write_text(json.dumps({"benchmark": "locomo", "protocol": "paper"}))
    with pytest.raises(RescoreError, match="is a locomo run"):
        rescored(data, run, "paper", tmp_path / "out")
    with pytest.raises(RescoreError, match="not found"):
        rescored(data, tmp_path / "nowhere", "paper", tmp_path / "out")
