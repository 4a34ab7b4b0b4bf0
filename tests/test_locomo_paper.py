"""LoCoMo protocol `paper` = the δ-mem release's evaluation, rule by rule (PAPER_PROTOCOL.md §1).

Expected strings are written out from the document, not from the code; the conversation is invented
(test_protocol_v0_golden.SAMPLE). Token counts in the truncation test are whitespace words.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import defaultdict

import pytest
from test_protocol_v0_golden import SAMPLE

from evals import locomo_render as render
from evals.locomo import LoCoMo
from evals.locomo_score import postprocess, score_release
from evals.text_metrics import locomo_f1, normalize_locomo
from evals.types import Item

SYSTEM = (
    "You are a helpful, respectful and honest assistant whose job is to understand the following conversation and "
    "answer questions based on the conversation. If you don't know the answer to a question, please don't share "
    "false information."
)
START = (
    "Below is a conversation between two people: Ann and Bo. The conversation takes place over multiple days and "
    "the date of each conversation is wriiten at the beginning of the conversation.\n\n"
)
QA = (
    "Based on the above conversations, write a short answer for the following question in a few words. Do not "
    "write complete and lengthy sentences. Answer with exact words from the conversations whenever possible.\n\n"
    "Question: "
)
SESSION_2 = (
    '\nDATE: 9:00 am on 5 June, 2023\nCONVERSATION:\nBo said, "I ran a marathon in Oslo."\n\n'
    'Ann said, "Wow, well done."\n\n'
)
SESSION_1 = (
    '\nDATE: 1:00 pm on 2 May, 2023\nCONVERSATION:\nAnn said, "I adopted a cat named Miso."\n\n'
    'Bo said, "Lovely!"\n and shared a photo of a grey cat.\n'
)


def bench_for(tmp_path, sample=SAMPLE, **kwargs) -> tuple[LoCoMo, object, dict]:
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([sample]))
    bench = LoCoMo(source=str(path), **kwargs)
    (context,), items = bench.load()
    return bench, context, {i.category: i for i in items}


def test_paper_is_the_default_and_names_its_source(tmp_path):
    bench, _, _ = bench_for(tmp_path)
    assert bench.protocol == "paper"
    assert bench.protocol_source == "declare-lab/delta-Mem@5cd5d91 deltamem/eval/locomo_protocol.py"
    with pytest.raises(ValueError, match="unknown LoCoMo protocol 'papr'"):
        LoCoMo(source="x.json", protocol="papr")


def test_full_context_prompt_verbatim(tmp_path):
    bench, context, by = bench_for(tmp_path, include_adversarial=True)
    system, user = bench.prompt(by["4"], context, "full_context")
    assert system == {"role": "system", "content": SYSTEM}
    # START + CONTEXT (sessions newest first) + "\n\n" + QA; the caption on its own line after the turn
    expected = START + SESSION_2 + SESSION_1 + "\n\n" + QA + "What is the name of Ann's cat?"
    assert user == {"role": "user", "content": expected}
    temporal = bench.prompt(by["2"], context, "full_context")[1]["content"]
    suffix = " Use DATE of CONVERSATION to answer with an approximate date."
    assert temporal == START + SESSION_2 + SESSION_1 + "\n\n" + QA + "When did Bo run a marathon?" + suffix
    assert bench.prompt(by["3"], context, "full_context")[1]["content"].endswith(QA + "Where did Bo run?")


def test_junctions(tmp_path):
    """The document's junctions: after START, between sessions (with and without a caption), at the end."""
    sample = copy.deepcopy(SAMPLE)
    conversation = sample["conversation"]
    conversation["session_3_date_time"] = "8:00 pm on 1 July, 2023"
    conversation["session_3"] = [{"speaker": "Ann", "dia_id": "D3:1", "text": "Bye."}]
    conversation["session_2"][1]["blip_caption"] = "a medal"  # session 2 now ends with a caption
    conversation["session_1"] = conversation["session_1"][:1]  # the oldest ends imageless
    bench, context, by = bench_for(tmp_path, sample)
    user = bench.prompt(by["4"], context, "full_context")[1]["content"]
    assert "conversation.\n\n\nDATE: 8:00 pm on 1 July, 2023\nCONVERSATION:\n" in user
    assert 'Ann said, "Bye."\n\n\nDATE: 9:00 am on 5 June, 2023' in user  # imageless: "\n\n\nDATE:
    assert 'Ann said, "Wow, well done."\n and shared a medal.\n\nDATE: 1:00 pm on 2 May, 2023' in user
    assert user.count("\nDATE: ") == 3 and 'Miso."\n\n\n\nBased on the above conversations' in user


def test_category_5_options_and_the_sha256_parity_rule(tmp_path):
    # sha256("42|conv-x|2|cat5")[:8] = cd4cb485727bdc8c (even): "No information available" is (a)
    assert hashlib.sha256(b"42|conv-x|2|cat5").digest()[:8].hex() == "cd4cb485727bdc8c"
    assert hashlib.sha256(b"42|conv-x|3|cat5").digest()[:8].hex() == "1f1ac7099d201cdb"  # odd
    templates = LoCoMo(source="x.json").templates
    assert render.not_mentioned_first(templates, 42, "conv-x", 2) is True
    assert render.not_mentioned_first(templates, 42, "conv-x", 3) is False
    bench, context, by = bench_for(tmp_path, include_adversarial=True)
    assert by["5"].meta["question_index"] == 2 and by["5"].answers == ["No information available"]
    expected = (
        "What is Bo's dog called? (a) No information available (b) Rex. "
        "Select the correct answer by writing (a) or (b)."
    )
    assert bench.question_text(by["5"]) == expected
    assert bench.prompt(by["5"], context, "full_context")[1]["content"].endswith(QA + expected)
    odd = render.question_text(templates, "Q?", "5", False, "Rex")
    assert odd == "Q? (a) Rex (b) No information available. Select the correct answer by writing (a) or (b)."


def test_question_index_is_the_position_among_the_conversations_selected_questions(tmp_path):
    bench, _, by = bench_for(tmp_path)  # categories 1-4: the category-5 question (qa 2) is dropped first
    assert [by[c].meta["question_index"] for c in "423"] == [0, 1, 2]
    assert [bench.generation(by[c]).seed for c in "423"] == [42, 43, 44]  # 42 + question_index
    g = bench.generation(by["3"])
    assert (g.do_sample, g.temperature, g.top_p, g.top_k, g.max_new_tokens) == (True, 0.4, 0.9, 10, 50)
    _, _, with_5 = bench_for(tmp_path, include_adversarial=True)
    assert [with_5[c].meta["question_index"] for c in "4253"] == [0, 1, 2, 3]


def test_no_context_and_memory(tmp_path):
    bench, context, by = bench_for(tmp_path)
    for condition in ("no_context", "memory_only"):
        prompt = bench.prompt(by["4"], None, condition)
        user = {"role": "user", "content": QA + "What is the name of Ann's cat?"}
        assert prompt == [{"role": "system", "content": SYSTEM}, user]
    # the memorised history keeps the harness's session messages, oldest first (the release has no memory condition)
    assert [m["content"].split("\n")[0] for m in bench.history_messages(context)] == [
        "DATE: 1:00 pm on 2 May, 2023", "DATE: 9:00 am on 5 June, 2023"]
    # recent_window: the latest whole turns (character budget: the rendered turns, blank lines included)
    window = LoCoMo(source=bench.source, window_chars=len('Ann said, "Wow, well done."\n\n')).prompt(
        by["4"], context, "recent_window")[1]["content"]
    assert window == START + '\nDATE: 9:00 am on 5 June, 2023\nCONVERSATION:\nAnn said, "Wow, well done."\n\n' + (
        "\n\n" + QA + "What is the name of Ann's cat?")


class WordTokenizer:
    """Counts whitespace words (what the truncation test's hand counts use)."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        assert add_special_tokens is False
        return {"input_ids": text.split()}


@pytest.mark.parametrize(
    "budget, kept",
    [
        # start 31 + qa 41 = 72 words. Session 1 (header 8), last turn first: 72+8+11 = 91, then 72+8+8+11 = 99;
        # session 2 (header 8): 72+8+5+19 = 104, then 72+8+8+24 = 112. A turn stays while the sum < budget.
        (113, [["D1:1", "D1:2"], ["D2:1", "D2:2"]]),
        (112, [["D1:1", "D1:2"], ["D2:2"]]),  # session 2 keeps its last turn only
        (104, [["D1:1", "D1:2"], []]),  # the boundary session keeps its header
        (99, [["D1:2"]]),  # the later sessions are dropped
        (91, [[]]),
    ],
)
def test_truncation_rule(tmp_path, budget, kept):
    bench, context, by = bench_for(tmp_path, context_window=budget + 50)  # budget = window − 50
    question = bench.question_text(by["4"])
    words = WordTokenizer()
    sessions = render.truncate_sessions(bench.templates, ("Ann", "Bo"), context.meta["sessions"], question,
                                        lambda text: len(words(text)["input_ids"]), budget)
    assert [[t["dia_id"] for t in s["turns"]] for s in sessions] == kept
    bench.fit_to(words, window=10**6)  # context_window, when set, wins over the backbone's window
    user = bench.prompt(by["4"], context, "full_context")[1]["content"]
    assert user == render.render_user(bench.templates, ("Ann", "Bo"), sessions, question)
    if budget == 112:
        assert user == START + '\nDATE: 9:00 am on 5 June, 2023\nCONVERSATION:\nAnn said, "Wow, well done."\n\n' + (
            SESSION_1 + "\n\n" + QA + "What is the name of Ann's cat?")


def test_truncation_needs_a_tokenizer_and_paper_v0_has_none(tmp_path):
    bench, context, by = bench_for(tmp_path, context_window=60)
    untouched = bench.prompt(by["4"], context, "full_context")
    assert SESSION_2 in untouched[1]["content"]  # no tokenizer bound: nothing is cut
    bench.fit_to(WordTokenizer(), window=4096)
    assert bench.prompt(by["4"], context, "full_context") != untouched
    v0, context, by = bench_for(tmp_path, protocol="paper_v0", context_window=60)
    before = v0.prompt(by["4"], context, "full_context")
    v0.fit_to(WordTokenizer(), window=60)
    assert v0.prompt(by["4"], context, "full_context") == before


@pytest.mark.parametrize(
    "output, processed",
    [
        ("Answer: In Florida (USA)", "in florida (us"),  # the document's example: "a)" of "(usa)" deleted
        ('He said \\"yes\\"', "he said 'yes'"),  # backslash-quote -> '
        ("\n  \n Paris \nRome", "paris"),  # the first non-empty line
        ("(b) Rex", "rex"),  # "(b)" goes before "b)"
        ("(a) b) answer: Rome", "rome"),
        ("Banana)", "banan"),  # a substring, not a token
        ("ANSWER: 7 May", "7 may"),
        ("   ", ""),
    ],
)
def test_postprocess(output, processed):
    assert postprocess(output) == processed


@pytest.mark.parametrize(
    "prediction, gold, category, score",
    [
        ("7 May, 2023", "7 May 2023", "2", 1.0),  # the document's golden examples
        ("libraries", "library", "4", 1.0),
        ("running, painting", "painting, running, swimming", "1", 0.6667),  # (1 + 1 + 0) / 3, 4 decimals
        ("the", "the", "4", 0.0),
        ("the", "the", "2", 0.0),
        ("hiking", "hiking, ", "1", 1.0),  # empty gold pieces are dropped
        ("cafe\u0301", "caf\u00e9", "4", 1.0),  # NFD: decomposed and composed é are one token
        ("likely yes", "Likely yes; she enjoys the outdoors", "3", 1.0),  # gold cut at the first ';'
        ("2022", 2022, "2", 1.0),
        ("in 2020", "2020", "4", 0.6667),  # [in, 2020] vs [2020]: 2/3
        ("not mentioned in the text", "x", "5", 1.0),
        ("rex", "x", "5", 0.0),
    ],
)
def test_scores(prediction, gold, category, score):
    assert score_release(prediction, gold, category) == score
    bench = LoCoMo(source="x.json")
    assert bench.score(prediction, Item("x", "q", [str(gold)], "c", category)) == {"f1": score}


def test_normalisation_with_nfd():
    assert normalize_locomo("Café, and the Cat!", nfd=True) == "cafe\u0301 cat"
    assert normalize_locomo("Café, and the Cat!") == "caf\u00e9 cat"
    assert locomo_f1("\u00c9cole", "e\u0301cole", nfd=True) == 1.0 and locomo_f1("\u00c9cole", "e\u0301cole") == 0.0


def test_aggregate_records_the_spec():
    rows = [{"category": "1", "f1": 0.6667}, {"category": "4", "f1": 1.0}, {"category": "5", "f1": 1.0}]
    summary = LoCoMo(source="x.json").aggregate(rows)
    assert summary["overall"] == pytest.approx(100 * 1.6667 / 2) and summary["n"] == 2
    assert (summary["protocol"], summary["protocol_source"]) == (
        "paper", "declare-lab/delta-Mem@5cd5d91 deltamem/eval/locomo_protocol.py")


def test_real_file_under_paper(data_dir):
    bench = LoCoMo(source=str(data_dir / "locomo10.json"))
    contexts, items = bench.load()
    assert len(items) == 1540
    by_context = defaultdict(list)
    for item in items:
        by_context[item.context_id].append(item.meta["question_index"])
    assert all(indices == list(range(len(indices))) for indices in by_context.values())
    contexts_by_id = {c.id: c for c in contexts}
    lengths = [len(bench.prompt(i, contexts_by_id[i.context_id], "full_context")[1]["content"]) for i in items]
    assert 55_000 <= min(lengths) and max(lengths) <= 111_999  # "users are 55K–111K characters long" (run)
    text = bench.prompt(items[0], contexts_by_id[items[0].context_id], "full_context")[1]["content"]
    assert text.startswith(f"Below is a conversation between two people: {contexts[0].meta['speaker_a']} and ")
    dates = [line for line in text.splitlines() if line.startswith("DATE: ")]
    sessions = contexts[0].meta["sessions"]
    assert dates == [f"DATE: {s['date']}" for s in reversed(sessions)]  # newest first
