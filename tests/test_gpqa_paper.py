"""GPQA protocol `paper` = the δ-mem release's evaluation, rule by rule (PAPER_PROTOCOL.md §4).

The questions are invented (GPQA text must never appear in the repository); the real file is only
counted and hashed.
"""

from __future__ import annotations

import csv
import gzip

import pytest

from evals.gpqa import GPQADiamond, release_hash, release_order
from evals.gpqa_extract import extract_release

COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3",
           "Record ID", "High-level domain", "Subdomain")


@pytest.mark.parametrize(
    "record_id, prefix, order, gold",
    [  # the document's golden values (run)
        ("rec0", "500585de", [2, 1, 3, 0], "D"),
        ("rec1", "90d6e9a9", [3, 1, 0, 2], "C"),
        ("rec3", "d8375ece", [3, 0, 2, 1], "B"),
        ("rec7", "6884df46", [0, 3, 1, 2], "A"),
    ],
)
def test_option_order_golden(tmp_path, record_id, prefix, order, gold):
    assert release_hash(record_id, 42)[:8] == prefix
    assert release_order(record_id, 42) == order
    path = tmp_path / "gpqa.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerow({"Question": " What is 2 + 2? ", "Correct Answer": " four ", "Incorrect Answer 1": "one",
                         "Incorrect Answer 2": "two", "Incorrect Answer 3": "three", "Record ID": record_id,
                         "High-level domain": "Physics", "Subdomain": "Arithmetic"})
    bench = GPQADiamond(source=str(path))
    (item,) = bench.load()[1]
    original = ["four", "one", "two", "three"]
    assert item.id == f"{record_id}/s42" and bench.seed == 42  # the protocol's seed
    assert item.meta["options"] == [original[k] for k in order] and item.answers == [gold]
    content = bench.prompt(item, None, "no_context")[0]["content"]
    options = "\n".join(f"{letter}. {original[k]}" for letter, k in zip("ABCD", order))
    assert content == (
        "Answer the following multiple-choice question.\nPlease show your choice in the `answer` field with only "
        'the choice letter, for example: {"answer": "C"}.\n\nQuestion: What is 2 + 2?\n\n' + options
    )
    assert bench.generation(item).max_new_tokens == 8192 and not bench.generation(item).do_sample
    assert bench.score(f'{{"answer": "{gold}"}}', item) == {"accuracy": 1.0, "extraction_failed": 0.0}
    assert bench.protocol_source == "declare-lab/delta-Mem@5cd5d91 deltamem/eval/benchmark_compare.py"


@pytest.mark.parametrize(
    "text, letter",
    [
        ('```json\n{"answer": "B", "why": "x"}\n```', "B"),  # 1: a fenced block
        ('```json {"answer": "C"} ``` and then "answer": "D"', "C"),  # 1 wins over 2, wherever 2 matches
        ('"answer":"d"', "D"),  # 2: lower case letters count
        ('{"answer": "A"} ... {"answer" : "B"}', "B"),  # the last match of the first pattern that matches
        ("so \\boxed{ \\text{ b } }", "B"),  # 3
        ("\\boxed{C}", "C"),
        ("Final Answer: **c**", "C"),  # 4
        ("answer\uff1aA", "A"),  # 4: the full-width colon
        ("Answer: A. On reflection, answer: C", "C"),
        ("The correct answer is a bit unclear.", "A"),  # 5: the quirk the document says to copy
        ("So the final answer is **D**.", "D"),
        ("Answer: Both", None),  # a letter only at a word boundary
        ("Let me think.\n(B)\n", "B"),  # bare letter on the last line
        ("C) because of inertia\nthen\nB", "C"),  # the first line is checked before the last
        ("a  the two spaces after the letter", "A"),  # leading letter + two spaces
        ("D: the larger one", "D"),
        ("**[c]**.", "C"),
        ('<think>"answer": "A"</think>\nAnswer: B', "A"),  # the whole output, reasoning included
        ("I cannot decide between the options.", None),
        ("Because it is so.", None),  # "B" followed by a letter is no answer
        ("", None),
    ],
)
def test_extraction_cascade(text, letter):
    assert extract_release(text) == letter


def test_real_file_under_paper(data_dir):
    path = data_dir / "gpqa_diamond.csv.gz"
    if not path.exists():
        pytest.skip("gpqa_diamond.csv.gz not present")
    # Never print GPQA text: every assertion compares counts or booleans computed beforehand.
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    n_unstripped = sum(row["Record ID"] != row["Record ID"].strip() for row in rows)
    assert n_unstripped == 0  # stripping the id (as the loader does) cannot move it off the release's hash
    items = GPQADiamond(source=str(path)).load()[1]
    correct = {row["Record ID"]: row["Correct Answer"].strip() for row in rows}
    follows = sum(
        item.meta["permutation"] == release_order(item.meta["record_id"], 42)
        and item.meta["options"]["ABCD".index(item.answers[0])] == correct[item.meta["record_id"]]
        for item in items
    )
    assert (len(items), follows) == (198, 198)
