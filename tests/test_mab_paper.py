"""MemoryAgentBench under protocol=paper (the δ-mem release, PAPER_PROTOCOL.md §5): hand-checked
(prediction, gold, expected) cases for its normaliser, aliases, Acc, F1, Recall@5, headline metric,
token budgets, prompt and clipping, each value worked out in the comment beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.mab_clip import TokenClip, char_clip
from evals.mab_paper import accuracy, best_f1, clean_aliases, span_f1
from evals.memory_agent_bench import MemoryAgentBench, config_defaults
from evals.text_metrics import normalize_qa_span
from evals.types import Item

FIXTURES = Path(__file__).parent / "fixtures"
MAB_JSON = FIXTURES / "mab_fixture.json"
ENTITIES = FIXTURES / "mab_entity2id.json"
MARKER = "\n\n[... context truncated ...]\n\n"


def bench(**kw) -> MemoryAgentBench:
    return MemoryAgentBench(source=str(MAB_JSON), protocol="paper", recsys_entities=str(ENTITIES), **kw)


def item(source: str, answers: list[str]) -> Item:
    return Item(id="x", question="q", answers=answers, category="c",
                meta={"source": source, "dataset": source, "scored_as": source})


def test_the_release_normaliser_turns_punctuation_into_spaces():
    assert normalize_qa_span("The U.S.-based firm's CEO") == "u s based firm s ceo"  # PAPER_PROTOCOL.md §2
    assert normalize_qa_span("  Brisk,Heron!! ") == "brisk heron"  # a comma becomes a space, not nothing


def test_aliases_are_stripped_deduplicated_and_never_empty():
    # "" and "  " are empty, "The" normalises to nothing, "paris." repeats N("Paris"), 7 is stringified
    assert clean_aliases(["", "  ", "The", " Paris ", "paris.", 7]) == ["Paris", "7"]
    assert clean_aliases("Oslo") == ["Oslo"]  # a single answer becomes a list


@pytest.mark.parametrize(
    "output, aliases, expected",
    [
        ("label 43", ["4"], 1.0),  # "4" is a character substring of "label 43": not token-bounded
        ("It is the Brisk Heron", ["Brisk Heron"], 1.0),  # substring of the whole output
        ("Sarrow.\nBecause Lumen Bay", ["Sarrow"], 1.0),  # equals the first line
        ("O'Neil", ["O Neil"], 1.0),  # both "o neil": the apostrophe becomes a space
        ("I don't know", ["Lumen Bay"], 0.0),
        ("!!!", ["x"], 0.0),  # N(pred) and N(first) both empty
        ("", ["x"], 0.0),
        ("anything", [], 0.0),  # no alias survives cleaning ("", "the")
    ],
)
def test_accuracy(output, aliases, expected):
    assert accuracy(output, aliases) == expected


def test_f1_is_the_best_of_whole_output_and_first_line():
    # whole: N = "paris is capital of france and more words", 8 tokens, 1 shared: P 1/8, R 1, F1 2/9;
    # first line "Paris": F1 1
    assert best_f1("Paris\nis the capital of France and more words", ["Paris"]) == 1.0
    assert best_f1("the quick brown fox", ["quick brown dog"]) == pytest.approx(2 / 3)  # 2 of 3 both ways
    assert best_f1("quick brown", ["quick brown dog", "nothing"]) == pytest.approx(0.8)  # P 1, R 2/3
    assert best_f1("   ", ["quick"]) == 0.0  # blank texts are skipped
    assert span_f1("", "") == 1.0 and span_f1("!!", "x") == 0.0  # both empty 1, one empty 0


def test_scores_per_source_with_the_release_headline_and_rounding():
    paper = bench()
    # Acc 1 (substring); F1: N "odile marsh painted it", P 2/4, R 1 -> 2/3 -> 0.6667 after rounding
    assert paper.score("Odile Marsh painted it.", item("ruler_qa1_197K", ["Odile Marsh"])) == {
        "score": 1.0, "accuracy": 1.0, "f1": 0.6667}
    summary = paper.score("the quick brown fox", item("infbench_sum_eng_shots2", ["quick brown dog"]))
    assert summary["score"] == summary["f1"] == 0.6667 and summary["accuracy"] == 0.0  # InfBench-Sum: token F1
    assert paper.score("label 43", item("someother_full", ["4"]))["score"] == 1.0  # an unknown source: Acc


def test_recsys_is_recall_at_5_of_the_official_harness():
    # lines after "1.": Ronin, Alien -> Aliens, Heat, Bigg -> Big, Up, Jaws; gold 11 12 13 = Jaws, Ronin, Aliens:
    # Ronin and Aliens are in the first five, Jaws is sixth: 2/3 -> 0.6667
    output = "Sure! 1. Ronin (1998)\n2. Alien\n3. Heat\n4. Bigg\n5. Up\n6. Jaws"
    scores = bench().score(output, item("recsys_redial_full", ["11", "12", "13"]))
    assert scores["recall@5"] == scores["score"] == 0.6667
    with pytest.raises(ValueError, match="recsys_entities"):
        MemoryAgentBench(source=str(MAB_JSON)).score(output, item("recsys_redial_full", ["11"]))


@pytest.mark.parametrize(
    "source, tokens",
    [
        ("ruler_qa1_197K", 50), ("ruler_qa2_421K", 50), ("longmemeval_s*", 50), ("longmemeval_s_-1_500", 50),
        ("eventqa_full", 40), ("eventqa_65536", 40), ("eventqa_131072", 40),
        ("icl_banking77_5900shot_balance", 20), ("icl_clinic150_7050shot_balance", 20),
        ("icl_nlu_8296shot_balance", 20), ("icl_trec_coarse_6600shot_balance", 20),
        ("icl_trec_fine_6400shot_balance", 20), ("recsys_redial_full", 300), ("infbench_sum_eng_shots2", 1200),
        ("detective_qa", 2000), ("factconsolidation_sh_6k", 10), ("factconsolidation_mh_262k", 10),
        ("someother_full", 4096), ("eventqa", 4096), ("ruler_qa1_197k", 4096),  # exact strings only
    ],
)
def test_generation_budget_per_exact_source(source, tokens):
    generation = bench().generation(item(source, ["x"]))
    assert generation.max_new_tokens == tokens and generation.do_sample is False


def test_the_unified_prompt_word_for_word():
    contexts, items = bench().load()
    messages = bench().prompt(items[0], contexts[0], "full_context")
    assert messages == [{"role": "user", "content": (
        "Use only the memory context below to answer the question.\n"
        "Reply with a short entity, phrase, number, or sentence only.\n"
        "If the answer is not supported by the context, reply exactly: I don't know.\n\n"
        f"{contexts[0].text}\n\nQuestion: Who painted the lighthouse of Varnholm?\nAnswer:")}]
    spaced = Item("y", "  Who?  ", ["a"], contexts[0].id, "c", items[0].meta)
    assert bench().prompt(spaced, contexts[0], "full_context")[0]["content"].endswith("Question: Who?\nAnswer:")


def test_the_character_pre_clip_keeps_a_head_third_and_a_tail_two_thirds():
    text = "a" * 100_000 + "b" * 100_000
    # (120000 - 31) // 3 = 39989 head characters, 120000 - 31 - 39989 = 79980 tail characters
    assert char_clip(text, 120_000, MARKER) == "a" * 39_989 + MARKER + "b" * 79_980
    assert len(MARKER) == 31 and char_clip(text, 200_000, MARKER) == text
    assert char_clip("abcdef  gh", 7, "|") == "ab|gh"  # head (7-1)//3 = 2, tail 4 = "  gh", lstripped
    assert char_clip("a  bcdefgh", 7, "|") == "a|efgh"  # head "a " rstripped
    settings = config_defaults()["paper"]
    settings["prompts"]["max_context_chars"] = 40
    contexts, _ = bench(paper=settings).load()
    # head (40-31)//3 = 3 characters, tail 40-31-3 = 6 (" day.\n", lstripped)
    assert contexts[0].text == "Doc" + MARKER + "day.\n" and contexts[0].meta["chars"] == 174


class CharTokenizer:
    """One token per character; a chat template that wraps the messages in <u>...</u>."""

    model_max_length = 10**30

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "<u>" + "".join(m["content"] for m in messages) + "</u>"


def test_the_token_clip_step_by_step():
    clip = TokenClip(CharTokenizer(), window=100, marker="|", template_kwargs={}, reserve=4, min_char_cap=10)

    def render(context):  # ten more tokens whenever there is a context: the clip must re-cut once
        return [{"role": "user", "content": "C:" + context + ("!" * 10 if context else "")}]

    context = "x" * 100 + "y" * 100
    # P = 100 - 20 = 80; empty prompt "<u>C:</u>" = 9 tokens; A = 80 - 9 - 4 = 67; 1 char/token;
    # char cap int(max(10, 1.25 * 67)) = 83: head (83-1)//3 = 27, tail 55;
    # 83 > 67 tokens: head (67-1)//3 = 22, tail 44; prompt 9 + 67 + 10 = 86 > 80: excess 6,
    # re-cut to 67 - 6 - 4 = 57: head (57-1)//3 = 18, tail 38; prompt 9 + 57 + 10 = 76
    assert clip.clip(context, render, max_new_tokens=20) == "x" * 18 + "|" + "y" * 38
    assert clip.clip("short", render, max_new_tokens=20) == "short"


def test_fit_to_clips_each_prompt_to_the_window():
    paper = bench()
    contexts, items = paper.load()
    unclipped = paper.prompt(items[0], contexts[0], "full_context")[0]["content"]
    paper.fit_to(CharTokenizer(), 450, {})
    content = paper.prompt(items[0], contexts[0], "full_context")[0]["content"]
    assert len("<u>" + unclipped + "</u>") > 450 - 50 >= len("<u>" + content + "</u>")  # window - 50 new tokens
    assert MARKER in content and content.endswith("Question: Who painted the lighthouse of Varnholm?\nAnswer:")
