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
from evals import memory_agent_bench as mab
from evals.gpqa import GPQADiamond, option_permutation
from evals.gpqa_extract import extract_v0
from evals.memory_agent_bench import MemoryAgentBench
from evals.types import BenchmarkDataError, Context, Item

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


def _item(dataset: str, answers: list[str]) -> Item:
    return Item(id="x", question="q", answers=answers, category="c", meta={"dataset": dataset, "source": dataset})


def test_normalize_and_exact_match():
    assert mab.normalize_answer("  The Cat's   HAT!  ") == "cats hat"
    assert mab.exact_match("The Brisk Heron.", ["Brisk Heron"]) == 1.0
    assert mab.exact_match("It is the Brisk Heron", ["Brisk Heron"]) == 0.0
    assert mab.substring_exact_match("It is the Brisk Heron", ["Brisk Heron"]) == 1.0
    assert mab.substring_exact_match("Pebble\nShe is grey.", ["Pebble"]) == 1.0
    assert mab.substring_exact_match("Sarrow.\nBecause Lumen Bay", ["Sarrow"]) == 1.0
    assert mab.substring_exact_match("I don't know", ["Lumen Bay"]) == 0.0
    assert mab.substring_exact_match("anything", ["", "the"]) == 0.0  # empty aliases never match


def test_token_f1():
    assert mab.token_f1("the quick brown fox", ["quick brown dog"]) == pytest.approx(2 / 3)
    assert mab.token_f1("quick brown", ["quick brown dog", "nothing"]) == pytest.approx(0.8)  # p=1, r=2/3
    assert mab.token_f1("", ["quick"]) == 0.0


def test_recall_at_5():
    output = "Here are my picks:\n1. Titanic (1997)\n2. Heat - a crime epic\n3. Up\n4. Alien (1979)\n5. Big\n6. Jaws"
    assert mab.parse_ranked_list(output) == ["titanic", "heat", "up", "alien", "big", "jaws"]
    assert mab.recall_at_k(output, ["Jaws (1975)", "Heat (1995)", "Alien (1979)"]) == pytest.approx(2 / 3)
    assert mab.recall_at_k("Heat, Jaws; Ronin", ["Jaws", "Ronin", "Aliens"]) == pytest.approx(2 / 3)
    assert mab.recall_at_k("Jaws\nHeat", ["Heat"]) == 1.0
    assert mab.recall_at_k("I don't know", ["Heat"]) == 0.0
    bench = MemoryAgentBench(source=str(MAB_JSON))
    scores = bench.score("1. Ronin\n2. Aliens (1986)\n3. Heat", _item("recsys_redial", ["Jaws (1975)", "Ronin (1998)"]))
    assert scores["recall@5"] == scores["score"] == 0.5


def test_score_per_source():
    bench = MemoryAgentBench(source=str(MAB_JSON))
    qa = bench.score("Odile Marsh painted it.", _item("ruler_qa1", ["Odile Marsh"]))
    assert qa == {
        "exact_match": 0.0,
        "substring_exact_match": 1.0,
        "f1": pytest.approx(2 / 3),
        "score": 1.0,
    }  # p 2/4, r 1
    summary = bench.score("the quick brown fox", _item("infbench_sum", ["quick brown dog"]))
    assert summary["score"] == summary["f1"] == pytest.approx(2 / 3) and "recall@5" not in summary


def test_clip_context():
    text = "abcdefghijklmnopqrstuvwxyz"
    assert mab.clip_context(text, 9, "|") == "abc|uvwxyz"  # head 9//3 = 3, tail 6
    assert mab.clip_context(text, 10, "|") == "abc|tuvwxyz"
    assert mab.clip_context(text, 26, "|") == text and mab.clip_context(text, None) == text
    clipped = mab.clip_context("x" * 100 + "y" * 200, 120)
    assert clipped == "x" * 40 + mab.TRUNCATION_MARKER + "y" * 80


@pytest.mark.parametrize(
    "source, family, tokens",
    [
        ("eventqa_full", "eventqa", 40),
        ("ruler_qa1_197K", "ruler_qa1", 50),
        ("ruler_qa2_421K", "ruler_qa2", 50),
        ("longmemeval_s*", "longmemeval", 50),
        ("factconsolidation_mh_262k", "factconsolidation_mh", 10),
        ("icl_banking77_5900shot_balance", "icl_banking77", 20),
        ("icl_trec_coarse_6600shot_balance", "icl_trec_coarse", 20),
        ("recsys_redial_full", "recsys_redial", 300),
        ("infbench_sum_eng_shots2", "infbench_sum", 1200),
        ("detective_qa", "detective_qa", 2000),
        ("someother_full", "someother", 50),
    ],
)
def test_dataset_family_and_generation_length(source, family, tokens):
    assert mab.dataset_family(source) == family
    generation = MemoryAgentBench(source=str(MAB_JSON)).generation(_item(family, ["x"]))
    assert generation.max_new_tokens == tokens and generation.do_sample is False


def test_aggregate_is_question_weighted():
    rows = [{"category": "Accurate_Retrieval", "dataset": "eventqa", "score": s, "f1": 0.5} for s in (1, 1, 0)]
    rows.append({"category": "Conflict_Resolution", "dataset": "factconsolidation_mh", "score": 0.0, "f1": 0.5})
    result = MemoryAgentBench(source=str(MAB_JSON)).aggregate(rows)
    assert result["overall"] == 50.0 and result["n"] == 4  # 2 of 4 questions, not (66.7 + 0) / 2
    assert result["category_mean"] == pytest.approx(100 / 3)
    assert result["per_category"]["Accurate_Retrieval"] == {"n": 3, "score": pytest.approx(200 / 3), "f1": 50.0}
    assert result["per_category"]["Conflict_Resolution"]["score"] == 0.0
    assert result["per_dataset"]["eventqa"]["n"] == 3 and result["f1"] == 50.0 and result["score"] == 50.0
    assert mab.PAPER_NUMBERS["frozen"]["overall"] == 29.54 and mab.PAPER_NUMBERS["msw"]["overall"] == 38.85


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
    one = MemoryAgentBench(source=str(MAB_JSON), splits=["Conflict_Resolution"], max_context_chars=30)
    clipped = one.load()[0][0]
    assert clipped.text.startswith("0. The") and mab.TRUNCATION_MARKER in clipped.text
    assert clipped.text.endswith("Sarrow.\n") and clipped.meta["chars"] > 30


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
    with pytest.raises(ValueError):
        MemoryAgentBench(source=str(MAB_JSON), protocol="official")
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
