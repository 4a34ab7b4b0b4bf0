"""MemoryAgentBench under protocol=official (the harness's utils/eval_other_utils.py): hand-checked
(prediction, gold, expected) cases for every rule and quirk — exact match, F1's yes/no/noanswer rule,
substring match with an empty gold, ROUGE-L(sum) with the stemmer, parse_output, the default
post-process max, the per-source routes (ICL, EventQA, RULER NIAH, InfBench choice, recsys), the
headline per source, the macro aggregate and its notes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from evals import mab_official
from evals.mab_official import calculate_metrics, exact_match, f1_score, parse_output, substring_exact_match
from evals.mab_recsys import MovieCatalog, edit_distance, movie_name, recommendation_lines
from evals.memory_agent_bench import MemoryAgentBench
from evals.types import Item

FIXTURES = Path(__file__).parent / "fixtures"
MAB_JSON = FIXTURES / "mab_fixture.json"
ENTITIES = FIXTURES / "mab_entity2id.json"


def official() -> MemoryAgentBench:
    return MemoryAgentBench(source=str(MAB_JSON), protocol="official", recsys_entities=str(ENTITIES))


def score(output: str, source: str, answers: list[str]) -> dict[str, float]:
    meta = {"source": source, "dataset": source, "scored_as": source}
    return official().score(output, Item(id="x", question="q", answers=answers, category="c", meta=meta))


def test_exact_match_and_f1_with_the_yes_no_rule():
    assert exact_match("The Brisk Heron.", "Brisk Heron") == 1.0  # punctuation deleted, "the" dropped
    assert exact_match("O'Neil", "O Neil") == 0.0  # "oneil" vs "o neil": deleted, not spaced
    assert f1_score("the cat sat", "cat") == pytest.approx(2 / 3)  # P 1/2, R 1
    assert f1_score("yes it is", "yes") == 0.0  # gold is "yes" and they differ: 0, not 1/2
    assert f1_score("yes", "yes") == 1.0 and f1_score("no", "yes") == 0.0
    assert f1_score("noanswer", "no answer") == 0.0  # "noanswer" is special, "no answer" is not


def test_substring_match_counts_an_empty_gold_as_found():
    assert substring_exact_match("It is the Brisk Heron", "Brisk Heron") == 1.0
    assert substring_exact_match("Heron", "Brisk Heron") == 0.0
    assert substring_exact_match("anything", "") == 1.0  # "" is a substring of every output
    assert substring_exact_match("anything", "the !!") == 1.0  # N("the !!") is "" too
    assert calculate_metrics("x", ["", "y"])["substring_exact_match"] == 1.0  # max over aliases


def test_rouge_l_uses_the_porter_stemmer():
    # tokens: the cat(s) were run(ning) | the cat run(s): LCS 3 of 4 and of 3 -> P 3/4, R 1, F 6/7
    metrics = calculate_metrics("The cats were running", ["the cat runs"])
    assert metrics["rougeL_f1"] == pytest.approx(6 / 7) and metrics["rougeL_recall"] == 1.0
    # one sequence: LCS("the dog ran the cat sat", "the cat sat the dog ran") = 3 of 6 -> 0.5;
    # per line (Lsum): each gold line is covered by one output line -> 1.0
    swapped = calculate_metrics("the dog ran\nthe cat sat", ["the cat sat\nthe dog ran"])
    assert swapped["rougeL_f1"] == pytest.approx(0.5) and swapped["rougeLsum_f1"] == pytest.approx(1.0)
    assert swapped["rougeLsum_recall"] == pytest.approx(1.0)


def test_rouge_without_its_package_names_the_extra(monkeypatch):
    mab_official.rouge_scorer.cache_clear()
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    with pytest.raises(ImportError, match=r"deltamem-harness\[mab-official\]"):
        calculate_metrics("a", ["a"])
    mab_official.rouge_scorer.cache_clear()


@pytest.mark.parametrize(
    "output, parsed",
    [
        ("Reasoning first.\nAnswer: Paris\nMore text", "Paris"),  # the rest of the "Answer:" line
        ("answer: answer: Paris", "Paris"),  # case-insensitive; a repeated prefix dropped
        ("The answer is: Paris", "The answer is: Paris"),  # no "answer:" -> the first line
        ("label: 3", "label: 3"),
        ("\nParis", ""),  # the first line is empty
        ("", ""),
    ],
)
def test_parse_output(output, parsed):
    assert parse_output(output) == parsed


def test_the_default_route_takes_the_better_of_raw_and_parsed_text():
    # raw N "answer paris paris is capital": EM 0, F1 1/3; parsed "Paris": EM 1, F1 1
    assert {k: v for k, v in score("Answer: Paris\nParis is the capital.", "ruler_qa1_197K", ["Paris"]).items()
            if k in ("exact_match", "f1")} == {"exact_match": 1.0, "f1": 1.0}
    # parsed = the first line "I think": all 0; raw "i think paris": substring 1, F1 P 1/3 R 1 = 1/2
    both = score("I think\nParis", "detective_qa", ["Paris"])
    assert (both["exact_match"], both["substring_exact_match"], both["f1"]) == (0.0, 1.0, 0.5)
    assert both["score"] == both["exact_match"]  # DetectiveQA's headline is EM


def test_icl_scores_the_parsed_text_only():
    label = score("label: 3", "icl_banking77_5900shot_balance", ["3"])  # parse_output looks for "Answer:"
    assert (label["score"], label["exact_match"], label["substring_exact_match"]) == (0.0, 0.0, 1.0)
    assert label["f1"] == pytest.approx(2 / 3)  # "label 3" vs "3"
    assert score("I think\n3", "icl_banking77_5900shot_balance", ["3"])["substring_exact_match"] == 0.0  # no max
    assert score("3", "icl_banking77_5900shot_balance", ["3"])["score"] == 1.0


def test_eventqa_recall_needs_every_alias_in_the_raw_output():
    one = score("(1) Tamsin opened the chapel vault.\nThat is all.", "eventqa_full",
                ["Tamsin opened the chapel vault."])
    assert one["eventqa_recall"] == 1.0 and one["substring_exact_match"] == one["score"] == 1.0
    assert one["exact_match"] == 0.0  # parsed "(1) Tamsin ..." has the extra "1"
    assert score("THE CHAPEL VAULT", "eventqa_65536", ["chapel", "vault"])["eventqa_recall"] == 1.0  # lowercased
    assert score("the chapel vault", "eventqa_full", ["chapel", "vault", "mill"])["eventqa_recall"] == 0.0  # 2/3


def test_ruler_niah_is_recall_alone_and_ruler_qa_the_default():
    assert score("The keys are 123 and 456", "ruler_niah_multikey_1", ["123", "456", "789"]) == {
        "score": pytest.approx(2 / 3), "ruler_recall": pytest.approx(2 / 3)}
    qa = score("Odile Marsh painted it.", "ruler_qa1_197K", ["Odile Marsh"])
    assert qa["score"] == qa["substring_exact_match"] == 1.0 and qa["exact_match"] == 0.0


def test_infbench_choice_checks_the_second_alias_anywhere_in_the_output():
    # "b" occurs in "a. the butler" (butler), so substring match is 1 and it forces exact match to 1
    wrong = score("A. the butler", "infbench_choice_eng_shots2", ["the gardener", "B"])
    assert (wrong["substring_exact_match"], wrong["exact_match"], wrong["f1"]) == (1.0, 1.0, 0.0)
    right = score("C", "infbench_choice_eng_shots2", ["the gardener", "B"])
    assert (right["substring_exact_match"], right["exact_match"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="second alias"):
        score("B", "infbench_choice_eng_shots2", ["B"])


def test_recsys_recall_maps_lines_to_the_nearest_movie():
    catalog = MovieCatalog.from_file(ENTITIES)
    assert movie_name("<http://dbpedia.org/resource/Heat_(1995_film)>") == "Heat"
    assert edit_distance("alien", "aliens") == 1 and edit_distance("kitten", "sitting") == 3
    assert recommendation_lines("Sure! 1. Ronin (1998)\n2. Alien") == ["Ronin", "Alien"]  # split at "1."
    # Ronin, Alien -> Aliens, Heat, Bigg -> Big, Up, Jaws; gold Jaws 11, Ronin 12, Aliens 13
    output = "Sure! 1. Ronin (1998)\n2. Alien\n3. Heat\n4. Bigg\n5. Up\n6. Jaws"
    assert catalog.recall(output, ["11", "12", "13"]) == {1: pytest.approx(1 / 3), 5: pytest.approx(2 / 3), 10: 1.0}
    # a blank line stays a slot and maps to the shortest name, "Up" (distance 2)
    assert catalog.recall("1. Heat\n\n2. Jaws", ["15"], (1, 5)) == {1: 0.0, 5: 1.0}
    assert catalog.recall("Jaws, Ronin", ["11", "12"], (1, 5)) == {1: 0.5, 5: 1.0}  # no "1.": commas split
    scores = score(output, "recsys_redial_full", ["11", "12", "13"])
    assert scores["score"] == scores["recsys_recall@5"] == pytest.approx(2 / 3) and "exact_match" not in scores


@pytest.mark.parametrize(
    "source, route, headline",
    [
        ("ruler_qa1_197K", "default", "substring_exact_match"),
        ("ruler_niah_single_1", "ruler_niah", "ruler_recall"),
        ("longmemeval_s*", "default", "substring_exact_match"),
        ("eventqa_full", "eventqa", "substring_exact_match"),
        ("icl_trec_fine_6400shot_balance", "icl", "exact_match"),
        ("recsys_redial_full", "recsys", "recsys_recall@5"),
        ("infbench_sum_eng_shots2", "default", "rougeLsum_f1"),
        ("infbench_choice_eng", "choice", "exact_match"),
        ("detective_qa", "default", "exact_match"),
        ("factconsolidation_mh_262k", "default", "substring_exact_match"),
        ("someother_full", "default", "substring_exact_match"),
    ],
)
def test_route_and_headline_per_source(source, route, headline):
    scorer = official().scorer
    assert scorer.route(source) == route and scorer.headline_rule(source)["metric"] == headline


def test_the_aggregate_follows_the_benchmark_table_and_states_its_quirks():
    def row(category, dataset, value):
        return {"category": category, "dataset": dataset, "score": value}

    rows = [row("Accurate_Retrieval", "ruler_qa1", 1.0), row("Accurate_Retrieval", "ruler_qa1", 0.0),
            row("Accurate_Retrieval", "eventqa", 1.0), row("Test_Time_Learning", "icl_banking77", 1.0),
            row("Test_Time_Learning", "icl_banking77", 1.0), row("Test_Time_Learning", "icl_clinc150", 0.0),
            row("Test_Time_Learning", "icl_clinc150", 0.0), row("Test_Time_Learning", "recsys_redial", 0.2),
            row("Long_Range_Understanding", "infbench_sum", 0.4)]
    result = official().aggregate(rows)
    # AR: SH-QA 50, EventQA 100 -> 75; TTL: MCC (4 questions) 50, Recom. 20 -> 35; LRU: Summ. 40
    assert result["per_category"]["Accurate_Retrieval"]["score"] == pytest.approx(75.0)
    assert result["per_category"]["Test_Time_Learning"]["columns"]["MCC"]["score"] == pytest.approx(50.0)
    assert result["per_category"]["Test_Time_Learning"]["score"] == pytest.approx(35.0)
    assert result["overall"] == pytest.approx((75 + 35 + 40) / 3) and result["protocol"] == "official"
    assert result["question_weighted"]["score"] == pytest.approx(100 * 4.6 / 9)
    assert result["per_dataset"]["icl_clinc150"] == {"n": 2, "score": 0.0}
    assert any("empty" in note for note in result["notes"])
    assert any(note.startswith("infbench_sum: `score` is rougeLsum_f1") and "judge" in note for note in result["notes"])
