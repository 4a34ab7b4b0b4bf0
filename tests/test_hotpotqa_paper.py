"""HotpotQA protocol `paper` = the δ-mem release's evaluation, rule by rule (PAPER_PROTOCOL.md §2).

Expected strings are written out from the document; the record is invented (test_protocol_v0_golden.HOTPOT:
passage 2 has only blank sentences, the question is unstripped).
"""

from __future__ import annotations

import json

import pytest
from test_protocol_v0_golden import HOTPOT

from evals.hotpotqa import HotpotQA, release_f1
from evals.text_metrics import normalize_answer, normalize_qa_span
from evals.types import Item

INSTRUCTION = "Answer the question using only the passages below.\nReply with a short span or yes/no only.\n\n"
QUESTION = "\n\nQuestion: Which city hosts Beta?\nAnswer:"
PASSAGES = "Passage 1 - Alpha:\nAlpha is a town. It is small.\n\nPassage 3 - Beta:\nBeta is in Oslo."


@pytest.fixture
def paper(tmp_path) -> tuple[HotpotQA, object, Item]:
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([HOTPOT]))
    bench = HotpotQA(source=str(path), protocol="paper")
    (context,), (item,) = bench.load()
    return bench, context, item


def test_prompt_verbatim(paper):
    bench, context, item = paper
    assert bench.protocol_source == "declare-lab/delta-Mem@5cd5d91 deltamem/eval/benchmark_compare.py"
    # the empty passage 2 is skipped but its number is used up; the question is stripped
    full = bench.prompt(item, context, "full_context")
    assert full == [{"role": "user", "content": INSTRUCTION + PASSAGES + QUESTION}]
    assert bench.history_messages(context) == [{"role": "user", "content": PASSAGES}]
    for condition in ("no_context", "memory_only"):  # no passages shown: the release's own empty rendering
        content = bench.prompt(item, None, condition)[0]["content"]
        assert content == INSTRUCTION + "No passages provided." + QUESTION
    # recent_window: "Passage 3 - Beta:\nBeta is in Oslo." is 34 characters + 2 for the join: fits 40; passage 1 not
    window = HotpotQA(source=bench.source, protocol="paper", window_chars=40).prompt(item, context, "recent_window")
    assert window[0]["content"] == INSTRUCTION + "Passage 3 - Beta:\nBeta is in Oslo." + QUESTION
    generation = bench.generation(item)
    assert (generation.max_new_tokens, generation.do_sample) == (32, False)


def test_normalize_qa_span():
    assert normalize_qa_span("The U.S.-based firm's CEO") == "u s based firm s ceo"  # the document's example
    assert normalize_answer("The U.S.-based firm's CEO") == "usbased firms ceo"  # official: deleted, not spaced
    assert normalize_qa_span("The-End") == "end"  # articles go before punctuation ...
    assert normalize_answer("The-End") == "theend"  # ... official removes them after
    assert normalize_qa_span("foo_bar, Ünïcode") == "foo_bar ünïcode"  # word characters are Unicode's, _ included
    assert normalize_qa_span("An apple and a pear") == "apple and pear"


@pytest.mark.parametrize(
    "output, gold, em, f1",
    [
        ("\n The Oslo.\nextra", "Oslo", 1.0, 1.0),  # the first non-empty line
        ("yes it is", "yes", 0.0, 0.5),  # no yes/no rule: [yes, it, is] vs [yes]
        ("no", "yes", 0.0, 0.0),
        ("...", "!!", 1.0, 1.0),  # both normalise to nothing: F1 1
        ("", "Oslo", 0.0, 0.0),
        ("Oslo, Norway", "Oslo", 0.0, 0.6667),  # 2/3 rounded to 4 decimals
        ("apple-pie", "apple pie", 1.0, 1.0),  # '-' becomes a space
        ("The U.S.-based firm's CEO", "u s based firm s ceo", 1.0, 1.0),
        ("Oslo", "  Oslo  ", 1.0, 1.0),  # the gold is stripped
    ],
)
def test_scores(output, gold, em, f1):
    assert HotpotQA(source="x.json", protocol="paper").score(output, Item("x", "q", [gold])) == {"em": em, "f1": f1}


def test_release_f1_edge_cases():
    assert release_f1("", "") == 1.0 and release_f1("a", "") == 0.0 and release_f1("", "b") == 0.0
    # [the, cat, sat] vs [cat]: P 1/3, R 1 -> 0.5; [a, b, c] vs [a, b, d]: 2/3 -> 0.6667
    assert release_f1("the cat sat", "cat") == 0.5 and release_f1("a b c", "a b d") == 0.6667


def test_aggregate_by_type_and_level():
    rows = [
        {"category": "bridge", "level": "hard", "em": 1.0, "f1": 1.0},
        {"category": "bridge", "level": "easy", "em": 0.0, "f1": 0.5},
        {"category": "comparison", "level": "hard", "em": 0.0, "f1": 0.0},
    ]
    summary = HotpotQA(source="x.json", protocol="paper").aggregate(rows)
    assert summary["overall"] == summary["em"] == pytest.approx(100 / 3) and summary["f1"] == pytest.approx(50.0)
    assert summary["per_category"]["bridge"] == {"em": 50.0, "f1": 75.0, "n": 2}
    assert summary["per_level"] == {"easy": {"em": 0.0, "f1": 50.0, "n": 1}, "hard": {"em": 50.0, "f1": 50.0, "n": 2}}
    assert summary["protocol"] == "paper" and summary["protocol_source"].startswith("declare-lab/delta-Mem@5cd5d91")
    assert "per_level" not in HotpotQA(source="x.json").aggregate(rows)  # official's summary keeps its shape


def test_real_file_under_paper(data_dir):
    path = str(data_dir / "hotpot_dev_distractor_subset500.json")
    bench = HotpotQA(source=path, protocol="paper")
    contexts, items = bench.load()
    assert len(items) == 500
    text = bench.prompt(items[0], contexts[0], "full_context")[0]["content"]
    assert text.startswith(INSTRUCTION + "Passage 1 - ")
    assert text.endswith(f"\n\nQuestion: {items[0].question.strip()}\nAnswer:")
    titles = [title for title, _ in contexts[0].meta["passages"]]
    assert all(f"Passage {i} - {title}:\n" in text for i, title in enumerate(titles, start=1))
