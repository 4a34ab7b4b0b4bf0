"""MemoryAgentBench rows rebuilt offline (evals/mab_rebuild.py): HELMET's ICL construction on hand-made
intent files, the FactConsolidation stand-in's latest-value answers, refusals that name the file,
row and field, and the rebuild mark carried into every result."""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter

import pytest
from hydra.utils import instantiate

from evals.mab_rebuild import FactConsolidationStandIn, ICLRebuild, RebuiltSplits, balanced
from evals.memory_agent_bench import MemoryAgentBench
from evals.types import BenchmarkDataError

from conftest import compose_config

LABELS = ["card_arrival", "exchange_rate", "top_up", "pin_blocked"]


def write_intents(root, per_label: int = 6, bad: str | None = None):
    (root / "banking77").mkdir(parents=True)
    for split in ("train", "test"):
        with (root / "banking77" / f"{split}.csv").open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["text", "category"])
            for label in LABELS:
                for k in range(per_label):
                    out.writerow([f"{split} utterance {k} about {label}", label])
            if bad == split:
                out.writerow(["a row without its intent", ""])
    pairs = {s: [[f"{s} ask {k} {label}", label] for label in LABELS for k in range(per_label)]
             for s in ("train", "val", "test")}
    (root / "clinc150").mkdir()
    (root / "clinc150" / "data_full.json").write_text(json.dumps(pairs))


def test_balanced_draws_every_label_once_per_round():
    rows = [(f"t{i}", label) for label in "abc" for i in range(5)]
    picked = balanced(rows, 7, random.Random(0))
    assert len(picked) == 7 and len(set(picked)) == 7
    assert sorted(Counter(label for _, label in picked).values()) == [2, 2, 3]  # rounds of a, b, c
    assert {label for _, label in picked[:3]} == set("abc")  # the first round holds every label
    assert balanced(rows, 7, random.Random(0)) == picked  # seeded


def test_icl_rows_follow_helmet_construction(tmp_path):
    write_intents(tmp_path)
    row = ICLRebuild(str(tmp_path), ["banking77"], shots={"banking77": 8}, questions=4, seed=1).row("banking77")
    items = row["context"].split("\n\n")
    assert len(items) == 8
    mapping = {}
    for item in items:
        text, label_line = item.split("\n")
        assert label_line.startswith("label: ")
        intent = re.search(r"about (\w+)", text).group(1)
        mapping.setdefault(intent, label_line[len("label: "):])
        assert mapping[intent] == label_line[len("label: "):]  # one integer per intent throughout
    assert sorted(mapping.values()) == ["0", "1", "2", "3"] and set(mapping) == set(LABELS)
    assert len(row["questions"]) == 4
    for question, answer in zip(row["questions"], row["answers"]):
        assert question.startswith("test ") and answer == [mapping[re.search(r"about (\w+)", question).group(1)]]
    assert row["metadata"]["source"] == "icl_banking77_8shot_balance_rebuild"
    assert "not the MemoryAgentBench hub row" in row["metadata"]["rebuild"]


def test_clinc150_reads_in_scope_pairs(tmp_path):
    write_intents(tmp_path)
    row = ICLRebuild(str(tmp_path), ["clinc150"], shots={"clinc150": 4}, questions=4).row("clinc150")
    assert row["metadata"]["source"] == "icl_clinc150_4shot_balance_rebuild" and len(row["answers"]) == 4


def test_malformed_intent_rows_name_the_file_row_and_field(tmp_path):
    write_intents(tmp_path, bad="train")
    with pytest.raises(BenchmarkDataError, match=r"banking77/train\.csv: row 26: field 'category' is missing"):
        ICLRebuild(str(tmp_path), ["banking77"]).row("banking77")
    data = json.loads((tmp_path / "clinc150" / "data_full.json").read_text())
    data["test"][3] = ["only text"]
    (tmp_path / "clinc150" / "data_full.json").write_text(json.dumps(data))
    with pytest.raises(BenchmarkDataError, match=r"data_full\.json: split 'test', row 3: expected \[text, intent\]"):
        ICLRebuild(str(tmp_path), ["clinc150"]).row("clinc150")
    with pytest.raises(BenchmarkDataError, match="data file not found"):
        ICLRebuild(str(tmp_path / "nowhere"), ["banking77"]).row("banking77")


def test_fact_consolidation_answers_the_latest_fact():
    row = FactConsolidationStandIn(rows=1, people=12, updates=0.5, questions=6, seed=3).row(0)
    lines = row["context"].splitlines()[1:]
    assert [int(line.split(".")[0]) for line in lines] == list(range(len(lines)))  # serial numbers in order
    for question, (answer,) in zip(row["questions"], row["answers"]):
        who = re.match(r"(?:Which city does|What does|What animal does|Which instrument does) (\w+ \w+)",
                       question).group(1)
        verb = {"Which city": " lives in ", "What does": " works as a ", "What animal": " owns a ",
                "Which instrument": " plays the "}[next(k for k in ("Which city", "What does", "What animal",
                                                                   "Which instrument") if question.startswith(k))]
        facts = [line for line in lines if f"{who}{verb}" in line]
        assert len(facts) == 2  # the original and its update
        assert facts[-1].endswith(f"{verb}{answer}.") and not facts[0].endswith(f"{verb}{answer}.")
    assert row["metadata"]["source"].endswith("_r0_standin")


def test_the_benchmark_marks_rebuilt_rows_in_names_and_results(tmp_path):
    write_intents(tmp_path)
    icl = ICLRebuild(str(tmp_path), ["banking77"], {"banking77": 8}, 4,
                     scored_as={"banking77": "icl_banking77_5900shot_balance"})
    facts = FactConsolidationStandIn(rows=1, people=6, questions=3, scored_as="factconsolidation_sh_6k")
    source = RebuiltSplits({"Test_Time_Learning": [icl], "Conflict_Resolution": [facts]})
    bench = MemoryAgentBench(source=source, splits=["Test_Time_Learning", "Conflict_Resolution"])
    contexts, items = bench.load()
    assert [c.meta["dataset"] for c in contexts] == ["icl_banking77_rebuild", "factconsolidation_sh_standin"]
    assert bench.generation(items[0]).max_new_tokens == 20 and bench.generation(items[-1]).max_new_tokens == 10
    assert set(bench.data_note["rebuilt_sources"]) == {c.meta["source"] for c in contexts}
    assert bench.score("label: 3", items[0])["accuracy"] == float(items[0].answers == ["3"])  # paper: substring
    unmarked = MemoryAgentBench(source=RebuiltSplits({"Conflict_Resolution": [FactConsolidationStandIn(rows=1)]}),
                                splits=["Conflict_Resolution"])
    assert unmarked.generation(unmarked.load()[1][0]).max_new_tokens == 4096  # its own name is no hub source
    with pytest.raises(BenchmarkDataError, match="builds no rows for split"):
        MemoryAgentBench(source=source, splits=["Accurate_Retrieval"]).load()


def test_the_config_builds_from_the_data_dir(tmp_path):
    write_intents(tmp_path, per_label=60)
    cfg = compose_config("task=eval", "benchmark=mab_rebuild", f"paths.data_dir={tmp_path}")
    contexts, items = instantiate(cfg.benchmark.loader).load()
    assert len(contexts) == 4 and len(items) == 2 * 100 + 2 * 40
