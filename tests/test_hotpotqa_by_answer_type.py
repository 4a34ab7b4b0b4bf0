"""scripts/hotpotqa_by_answer_type.py: EM per condition split into yes/no and span questions by the
gold answer, from a run's scores.jsonl; an id the data file lacks is an error."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("by_type", REPO_ROOT / "scripts" / "hotpotqa_by_answer_type.py")
by_type_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(by_type_script)


def test_em_is_split_by_the_gold_answer_type(tmp_path):
    data = tmp_path / "hotpot.json"
    data.write_text(json.dumps([{"_id": "a", "answer": "Yes"}, {"_id": "b", "answer": "Paris"},
                                {"_id": "c", "answer": " no "}, {"_id": "d", "answer": "1912"}]))
    run = tmp_path / "run" / "eval_hotpotqa"
    run.mkdir(parents=True)
    rows = [("a", "memory_only", 1.0), ("b", "memory_only", 1.0), ("c", "memory_only", 0.0),
            ("d", "memory_only", 0.0), ("b", "no_context", 0.0), ("a", "no_context", 1.0)]
    run.joinpath("scores.jsonl").write_text(
        "".join(json.dumps({"id": i, "condition": c, "em": em, "f1": em}) + "\n" for i, c, em in rows))
    out = tmp_path / "out.json"
    report = by_type_script.main(["--data", str(data), "--run", f"arm={run.parent}", "--out", str(out)])
    assert report["counts"] == {"yes/no": 2, "span": 2}
    conditions = json.loads(out.read_text())["runs"]["arm"]["conditions"]
    assert conditions["memory_only"] == {"span": {"em": 50.0, "n": 2}, "yes/no": {"em": 50.0, "n": 2}}
    assert conditions["no_context"] == {"span": {"em": 0.0, "n": 1}, "yes/no": {"em": 100.0, "n": 1}}
    run.joinpath("scores.jsonl").write_text(json.dumps({"id": "zz", "condition": "no_context", "em": 0.0}) + "\n")
    with pytest.raises(ValueError, match="question 'zz' is not in the data file"):
        by_type_script.main(["--data", str(data), "--run", f"arm={run.parent}", "--out", str(out)])
