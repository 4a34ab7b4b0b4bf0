"""Golden tests of the GPQA-Diamond and MemoryAgentBench benchmark modules (CPU, no network).

GPQA text is never printed: the real-file test only asserts counts, hashes and booleans.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from evals import gpqa
from evals.gpqa import GPQADiamond, option_permutation
from evals.gpqa_extract import extract_v0
from evals.memory_agent_bench import MemoryAgentBench
from evals.types import BenchmarkDataError, Context

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GPQA_CSV = FIXTURES / "gpqa_fixture.csv"
MAB_JSON = FIXTURES / "mab_fixture.json"
CONDITIONS = ("full_context", "no_context", "memory_only", "recent_window")


# ----------------------------------------------------------------------------- GPQA


@pytest.mark.parametrize(
    "text, letter",
    [
        ('{"answer": "C"}', "C"),
        ("Some reasoning.\n{ 'answer' : 'b' }", "B"),  # spacing, single quotes, lower-case letter
        ('{"answer":"(D)"}', "D"),
        ("The area is 4, so the choice is \\boxed{D}.", "D"),
        ("$\\boxed{\\text{A}}$", "A"),
        ("After elimination, the answer is (A).", "A"),
        ("Answer: C", "C"),
        ("final answer: (B)", "B"),
        ("The correct answer is **D**", "D"),
        ("Let me think.\nThe mass cancels out.\n\n(B)\n", "B"),  # lone letter on the last line
        ("C.\nBecause the mass cancels out.", "C"),  # lone letter on the first line
        ("**A**", "A"),
        ('The answer is A at first glance, but {"answer": "B"}', "B"),  # JSON outranks prose
        ("Answer: A ... on reflection the answer is C", "C"),  # the last form wins
        ("<think>maybe the answer is A</think>\nAnswer: D", "D"),
        ("I cannot decide between the options.", None),
        ("The answer is a subtle one.", None),  # a lower-case article is not a letter
        ("Answer: Both", None),
        ("", None),
    ],
)
def test_extract_letter_v0(text, letter):  # paper_v0 / official's cascade (the release's: test_hotpotqa_gpqa_paper.py)
    assert extract_v0(text) == letter


def test_permutation_is_stable_hash():
    digest = hashlib.sha256(b"recFixtureQ0000001|0").digest()
    index = int.from_bytes(digest[:8], "big") % 24
    assert index == 14  # hand-checked: [2, 1, 0, 3] = 6*2 + 2*1 + 0 in lexicographic order
    assert option_permutation("recFixtureQ0000001", 0) == list(list(itertools.permutations(range(4)))[index])
    assert option_permutation("recFixtureQ0000001", 0) == [2, 1, 0, 3]
    assert option_permutation("recFixtureQ0000001", 1) == [1, 0, 3, 2]
    for seed in range(5):
        assert sorted(option_permutation("recX", seed)) == [0, 1, 2, 3]


def test_gpqa_fixture_load_and_permutation():
    contexts, items = GPQADiamond(source=str(GPQA_CSV), protocol="paper_v0").load()
    assert contexts == [] and len(items) == 6
    assert [item.category for item in items] == ["Physics"] * 2 + ["Chemistry"] * 2 + ["Biology"] * 2
    assert [item.meta["correct_letter"] for item in items] == ["C", "B", "A", "A", "B", "C"]
    with GPQA_CSV.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for item, row in zip(items, rows):
        perm = item.meta["permutation"]
        assert perm == option_permutation(row["Record ID"], 0)
        assert item.answers == [item.meta["correct_letter"]] == ["ABCD"[perm.index(0)]]
        original = [
            row["Correct Answer"],
            row["Incorrect Answer 1"],
            row["Incorrect Answer 2"],
            row["Incorrect Answer 3"],
        ]
        assert item.meta["options"] == [original[k] for k in perm]
        assert item.meta["options"]["ABCD".index(item.meta["correct_letter"])] == row["Correct Answer"]
    again = GPQADiamond(source=str(GPQA_CSV), protocol="paper_v0").load()[1]
    assert [i.meta["permutation"] for i in again] == [i.meta["permutation"] for i in items]
    seed1 = GPQADiamond(source=str(GPQA_CSV), seed=1, protocol="paper_v0").load()[1]
    assert [i.meta["correct_letter"] for i in seed1] == ["B", "A", "D", "D", "D", "D"]
    assert seed1[0].id == "recFixtureQ0000001/s1"


def test_gpqa_prompt_generation_score(tmp_path):
    bench = GPQADiamond(source=str(GPQA_CSV), protocol="paper_v0")
    item = bench.load()[1][0]  # permutation [2, 1, 0, 3]: the correct answer "3 m/s^2" is C
    prompts = [bench.prompt(item, None, condition) for condition in CONDITIONS]
    assert all(p == prompts[0] for p in prompts)
    content = prompts[0][0]["content"]
    assert prompts[0][0]["role"] == "user" and '{"answer": "X"}' in content
    assert "A) 0.33 m/s^2\nB) 12 m/s^2\nC) 3 m/s^2\nD) 8 m/s^2" in content
    generation = bench.generation(item)
    assert generation.max_new_tokens == 8192 and generation.do_sample is False
    assert bench.score('{"answer": "C"}', item) == {"accuracy": 1.0, "extraction_failed": 0.0}
    assert bench.score("Answer: B", item) == {"accuracy": 0.0, "extraction_failed": 0.0}
    assert bench.score("no idea", item) == {"accuracy": 0.0, "extraction_failed": 1.0}
    with pytest.raises(ValueError):
        bench.prompt(item, None, "bogus")


def test_gpqa_aggregate():
    rows = [
        {"category": "Physics", "accuracy": 1.0, "extraction_failed": 0.0},
        {"category": "Physics", "accuracy": 0.0, "extraction_failed": 1.0},
        {"category": "Physics", "accuracy": 1.0, "extraction_failed": 0.0},
        {"category": "Biology", "accuracy": 0.0, "extraction_failed": 0.0},
    ]
    result = GPQADiamond(source=str(GPQA_CSV)).aggregate(rows)
    assert result["overall"] == result["accuracy"] == 50.0 and result["n"] == 4
    assert result["extraction_failure_rate"] == 25.0
    physics = {"accuracy": pytest.approx(200 / 3), "extraction_failure_rate": pytest.approx(100 / 3), "n": 3}
    assert result["per_category"]["Physics"] == physics
    assert result["per_category"]["Biology"] == {"accuracy": 0.0, "extraction_failure_rate": 0.0, "n": 1}
    assert gpqa.PAPER_NUMBERS == {"frozen": {"overall": 39.39}, "tsw": {"overall": 40.40}}


def test_gpqa_gzip_and_malformed(tmp_path):
    gz = tmp_path / "fixture.csv.gz"
    with GPQA_CSV.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert len(GPQADiamond(source=str(gz)).load()[1]) == 6
    with GPQA_CSV.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    no_column = tmp_path / "no_column.csv"
    with no_column.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, [h for h in header if h != "Incorrect Answer 3"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(BenchmarkDataError, match=r"no_column\.csv.*Incorrect Answer 3"):
        GPQADiamond(source=str(no_column)).load()
    rows[2]["Correct Answer"] = ""
    empty = tmp_path / "empty.csv"
    with empty.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(BenchmarkDataError, match=r"empty\.csv: record 2 .*Correct Answer"):
        GPQADiamond(source=str(empty)).load()


def test_gpqa_real_file(data_dir):
    path = data_dir / "gpqa_diamond.csv.gz"
    if not path.exists():
        pytest.skip("gpqa_diamond.csv.gz not present")
    # Never print GPQA text: every assertion compares counts or booleans computed beforehand.
    items = GPQADiamond(source=str(path), protocol="paper_v0").load()[1]
    n_items, n_ids = len(items), len({item.id for item in items})
    assert (n_items, n_ids) == (198, 198)
    domains = sorted({item.category for item in items})
    assert domains == ["Biology", "Chemistry", "Physics"]
    letters = [item.meta["correct_letter"] for item in items]
    letter_counts = {letter: letters.count(letter) for letter in "ABCD"}
    assert min(letter_counts.values()) > 20 and sum(letter_counts.values()) == 198
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        correct_by_id = {row["Record ID"].strip(): row["Correct Answer"].strip() for row in csv.DictReader(handle)}
    follows = sum(
        item.meta["permutation"] == option_permutation(item.meta["record_id"], 0)
        and item.meta["options"]["ABCD".index(item.meta["correct_letter"])] == correct_by_id[item.meta["record_id"]]
        for item in items
    )
    assert follows == 198
    again = GPQADiamond(source=str(path), protocol="paper_v0").load()[1]
    n_same = sum(a.meta["permutation"] == b.meta["permutation"] for a, b in zip(items, again))
    assert n_same == 198
    seed3 = GPQADiamond(source=str(path), seed=3, protocol="paper_v0").load()[1]
    n_changed = sum(a.meta["permutation"] != b.meta["permutation"] for a, b in zip(items, seed3))
    assert n_changed > 150


# ----------------------------------------------------------------------------- MemoryAgentBench


def test_mab_fixture_load_and_prompts():
    bench = MemoryAgentBench(source=str(MAB_JSON))
    contexts, items = bench.load()
    assert len(contexts) == 8 and len(items) == 10
    assert {c.id for c in contexts} >= {"Accurate_Retrieval:0", "Conflict_Resolution:0"}
    first = items[0]
    assert first.id == "Accurate_Retrieval:0:0" and first.context_id == "Accurate_Retrieval:0"
    assert first.answers == ["Odile Marsh"] and first.category == "Accurate_Retrieval"
    assert first.meta["source"] == "ruler_qa1_197K" and first.meta["dataset"] == "ruler_qa1"
    assert [i.category for i in items].count("Test_Time_Learning") == 2
    context = contexts[0]
    full = bench.prompt(first, context, "full_context")[0]["content"]
    assert context.text in full and first.question in full and "I don't know" in full
    bare = bench.prompt(first, context, "no_context")
    assert bare == bench.prompt(first, context, "memory_only") and "Odile" not in bare[0]["content"]
    small = MemoryAgentBench(source=str(MAB_JSON), recent_window_chars=20)
    recent = small.prompt(first, context, "recent_window")[0]["content"]
    assert context.text[-20:] in recent and context.text[:20] not in recent
    assert len(MemoryAgentBench(source=str(MAB_JSON), limit_rows=1).load()[0]) == 4
    assert first.meta["scored_as"] == "ruler_qa1_197K" and context.meta["scored_as"] == "ruler_qa1_197K"


def _write(tmp_path: Path, name: str, data: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda row: row.pop("questions"), "questions"),
        (lambda row: row.pop("context"), "context"),
        (lambda row: row["metadata"].pop("source"), "metadata.source"),
        (lambda row: row["answers"].pop(), "answers"),
        (lambda row: row.update(answers=["Tamsin opened the chapel vault."]), "answers[0]"),
        (lambda row: row.update(metadata=None), "metadata"),
    ],
)
def test_mab_malformed_row(tmp_path, mutate, field):
    data = json.loads(MAB_JSON.read_text())
    mutate(data["Accurate_Retrieval"][1])
    path = _write(tmp_path, "bad_mab.json", data)
    with pytest.raises(BenchmarkDataError) as error:
        MemoryAgentBench(source=path).load()
    message = str(error.value)
    assert "bad_mab.json" in message and "'Accurate_Retrieval'" in message
    assert "row 1" in message and repr(field) in message


def test_mab_missing_split_and_hub(tmp_path, monkeypatch):
    data = json.loads(MAB_JSON.read_text())
    del data["Test_Time_Learning"]
    with pytest.raises(BenchmarkDataError, match="Test_Time_Learning"):
        MemoryAgentBench(source=_write(tmp_path, "partial.json", data)).load()
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return data.get(split, data["Accurate_Retrieval"])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the datasets cache: no reachability check
    contexts, items = MemoryAgentBench(source="ai-hyz/MemoryAgentBench", splits=["Conflict_Resolution"]).load()
    assert calls == [("ai-hyz/MemoryAgentBench", "Conflict_Resolution")] and len(items) == 2
    with pytest.raises(ValueError, match="unknown MemoryAgentBench protocol"):
        MemoryAgentBench(source=str(MAB_JSON), protocol="officially")
    assert isinstance(contexts[0], Context)


def test_the_runner_hands_the_source_to_the_aggregate_so_results_break_down_per_dataset():
    from evals.runner import summarize

    def row(qid, dataset, score):
        return {"id": qid, "condition": "full_context", "category": "Test_Time_Learning", "context_id": "c",
                "scores": {"score": score, "exact_match": score}, "prompt_tokens": 1, "output_tokens": 1,
                "truncated_tokens": 0, "answer_seconds": 0.0, "memorize_seconds": 0.0,
                "item_meta": {"dataset": dataset, "source": dataset + "_x"}}

    rows = [row("a", "icl_banking77", 1.0), row("b", "icl_banking77", 0.0), row("c", "icl_clinc150", 1.0)]
    per_condition, _ = summarize(MemoryAgentBench(source="unused"), rows, ["full_context"])
    per_dataset = per_condition["full_context"]["per_dataset"]
    assert per_dataset["icl_banking77"]["score"] == 50.0 and per_dataset["icl_banking77"]["n"] == 2
    assert per_dataset["icl_clinc150"]["score"] == 100.0
