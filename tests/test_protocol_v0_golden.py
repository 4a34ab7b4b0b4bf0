"""Golden values of the harness's own protocols as they stood before the release-exact `paper`
protocol (issue 18): LoCoMo's old `paper` (now `paper_v0`, the replication study's LoCoMo runs) and
HotpotQA's `official` (unchanged) and old `paper` (now `paper_v0`). Every string and score below
was captured from the code of commit 7e6ff95 on an invented conversation; they must never change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.hotpotqa import HotpotQA
from evals.locomo import LoCoMo
from evals.types import Item

LOCOMO_V0 = "paper_v0"  # the name today's LoCoMo `paper` protocol is kept under
HOTPOT_V0 = "paper_v0"  # today's HotpotQA `paper` (the official prompt, F1 without the yes/no rule)


def _turn(speaker: str, dia: str, text: str, caption: str | None = None) -> dict:
    return {"speaker": speaker, "dia_id": dia, "text": text} | ({"blip_caption": caption} if caption else {})


SAMPLE = {  # invented; two sessions, one image turn, one question of categories 4, 2, 5 and 3
    "sample_id": "conv-x",
    "conversation": {
        "speaker_a": "Ann",
        "speaker_b": "Bo",
        "session_1_date_time": "1:00 pm on 2 May, 2023",
        "session_1": [
            _turn("Ann", "D1:1", "I adopted a cat named Miso."),
            _turn("Bo", "D1:2", "Lovely!", "a photo of a grey cat"),
        ],
        "session_2_date_time": "9:00 am on 5 June, 2023",
        "session_2": [_turn("Bo", "D2:1", "I ran a marathon in Oslo."), _turn("Ann", "D2:2", "Wow, well done.")],
    },
    "qa": [
        {"question": "What is the name of Ann's cat?", "answer": "Miso", "evidence": ["D1:1"], "category": 4},
        {"question": "When did Bo run a marathon?", "answer": "June 2023", "evidence": ["D2:1"], "category": 2},
        {"question": "What is Bo's dog called?", "evidence": ["D2:1"], "category": 5, "adversarial_answer": "Rex"},
        {"question": "Where did Bo run?", "answer": "Oslo", "evidence": ["D2:1"], "category": 3},
    ],
}

V0_SYSTEM = (
    "You are a helpful assistant. Read the long-term conversation between two people carefully and answer "
    "questions about what was said in it."
)
V0_HISTORY = (
    "Below is a conversation between Ann and Bo over several days. Each session starts with the DATE on which "
    "it took place; the most recent session comes first.\n\n"
    "DATE: 9:00 am on 5 June, 2023\nCONVERSATION:\n"
    'Bo said, "I ran a marathon in Oslo."\nAnn said, "Wow, well done."\n\n'
    "DATE: 1:00 pm on 2 May, 2023\nCONVERSATION:\n"
    'Ann said, "I adopted a cat named Miso."\nBo said, "Lovely!" and shared a photo of a grey cat.\n\n'
)
V0_QA = (
    "Using the conversation, answer the question with a short phrase. Whenever possible, use the exact words "
    "from the conversation.\n\nQuestion: "
)


@pytest.fixture
def v0(tmp_path) -> tuple[LoCoMo, list, dict]:
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([SAMPLE]))
    bench = LoCoMo(source=str(path), protocol=LOCOMO_V0, include_adversarial=True)
    contexts, items = bench.load()
    return bench, contexts, {i.category: i for i in items}


def test_locomo_v0_prompts(v0):
    bench, (context,), by = v0
    system = {"role": "system", "content": V0_SYSTEM}
    full = bench.prompt(by["4"], context, "full_context")
    assert full == [system, {"role": "user", "content": V0_HISTORY + V0_QA + "What is the name of Ann's cat?"}]
    bare = bench.prompt(by["4"], None, "no_context")
    assert bare == [system, {"role": "user", "content": V0_QA + "What is the name of Ann's cat?"}]
    temporal = bench.prompt(by["2"], context, "full_context")[1]["content"]
    assert temporal == V0_HISTORY + V0_QA + (
        "When did Bo run a marathon? Use the DATE of the conversation to give an approximate date."
    )
    adversarial = bench.prompt(by["5"], context, "full_context")[1]["content"]
    expected_5 = "What is Bo's dog called? Select the correct answer: (a) Rex (b) Not mentioned in the conversation."
    assert adversarial == V0_HISTORY + V0_QA + expected_5
    assert bench.question_text(by["5"]) == expected_5


def test_locomo_v0_recent_window_history_and_items(v0, tmp_path):
    bench, (context,), by = v0
    recent = LoCoMo(source=bench.source, protocol=LOCOMO_V0, window_turns=3)
    user = recent.prompt(by["4"], context, "recent_window")[1]["content"]
    assert user == V0_HISTORY.replace('Ann said, "I adopted a cat named Miso."\n', "") + V0_QA + (
        "What is the name of Ann's cat?"
    )
    session_1 = (
        'DATE: 1:00 pm on 2 May, 2023\nCONVERSATION:\nAnn said, "I adopted a cat named Miso."\n'
        'Bo said, "Lovely!" and shared a photo of a grey cat.'
    )
    session_2 = (
        'DATE: 9:00 am on 5 June, 2023\nCONVERSATION:\nBo said, "I ran a marathon in Oslo."\n'
        'Ann said, "Wow, well done."'
    )
    history = [{"role": "user", "content": session_1}, {"role": "user", "content": session_2}]
    assert bench.history_messages(context) == history
    assert bench.history_text(context) == session_1 + "\n\n" + session_2
    assert by["5"].meta == {
        "evidence": ["D2:1"], "question_index": 2, "qa_index": 2, "category_name": "adversarial",
        "adversarial_answer": "Rex", "not_mentioned_first": False,
    }
    assert by["5"].answers == ["Not mentioned in the conversation"]
    assert [bench.generation(by[c]).seed for c in "4253"] == [42, 43, 44, 45]
    generation = bench.generation(by["3"])
    assert (generation.do_sample, generation.temperature, generation.top_p, generation.top_k) == (True, 0.4, 0.9, 10)
    assert generation.max_new_tokens == 50


# (raw output, gold, category) -> today's post-processed prediction and score
LOCOMO_V0_SCORES = [
    ("Answer: In Florida (USA)", "Florida", "4", "in florida (usa)", 0.5),  # [in, florida, usa] vs [florida]
    ("cafe\u0301", "caf\u00e9", "4", "cafe\u0301", 0.0),  # no Unicode normalisation: two different tokens
    ("hiking", "hiking, ", "1", "hiking", 0.5),  # the empty gold piece counts (and scores 0)
    ("running, painting", "painting, running, swimming", "1", "running, painting", 2 / 3),  # not rounded
    ("the", "the", "4", "the", 0.0),
    ("7 May, 2023", "7 May 2023", "2", "7 may, 2023", 1.0),
    ("libraries", "library", "4", "libraries", 1.0),
    ('He said \\"yes\\"', "he said 'yes'", "4", 'he said \\"yes\\"', 1.0),  # backslash-quote kept
    ("a) Rome", "Rome", "4", "a) rome", 1.0),  # "a)" kept ("a" is then an article)
    ("\n\nAnswer: not mentioned\nRex", "x", "5", "not mentioned", 1.0),
    ("likely yes", "Likely yes; outdoors", "3", "likely yes", 1.0),
]


@pytest.mark.parametrize("output, gold, category, processed, score", LOCOMO_V0_SCORES)
def test_locomo_v0_scores(output, gold, category, processed, score):
    from evals.locomo_score import postprocess_v0

    assert postprocess_v0(output) == processed
    bench = LoCoMo(source="unused.json", protocol=LOCOMO_V0)
    item = Item("x", "q", [gold], "c", category)
    assert bench.score(output, item) == {"f1": pytest.approx(score, abs=1e-12)}


# ----------------------------------------------------------------------------- HotpotQA

HOTPOT = {  # invented; a passage whose sentences are all blank, an unstripped question
    "_id": "h1",
    "question": " Which city hosts Beta? ",
    "answer": "Oslo",
    "type": "bridge",
    "level": "hard",
    "context": [
        ["Alpha", ["Alpha is a town.", " It is small. "]],
        ["Empty", ["  ", ""]],
        ["Beta", ["Beta is in Oslo."]],
    ],
    "supporting_facts": [["Beta", 0]],
}
OFFICIAL_INSTRUCTION = (
    "Answer the question using only the passages. Reply with just a short answer span from the passages, or with "
    "yes or no.\n\n"
)
OFFICIAL_PASSAGES = (
    "Passage 1 - Alpha: Alpha is a town. It is small.\n\nPassage 2 - Empty: \n\nPassage 3 - Beta: Beta is in Oslo."
)
OFFICIAL_QUESTION = "\n\nQuestion:  Which city hosts Beta? \nAnswer:"


@pytest.mark.parametrize("protocol", ["official", HOTPOT_V0])
def test_hotpot_official_prompts(tmp_path: Path, protocol):
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([HOTPOT]))
    bench = HotpotQA(source=str(path), protocol=protocol)
    (context,), (item,) = bench.load()
    full = bench.prompt(item, context, "full_context")
    assert full == [{"role": "user", "content": OFFICIAL_INSTRUCTION + OFFICIAL_PASSAGES + OFFICIAL_QUESTION}]
    bare = bench.prompt(item, None, "no_context")[0]["content"]
    assert bare == "Answer the question. Reply with just a short answer span, or with yes or no." + OFFICIAL_QUESTION
    recent = HotpotQA(source=str(path), protocol=protocol, window_chars=40).prompt(item, context, "recent_window")
    assert recent[0]["content"] == OFFICIAL_INSTRUCTION + "Passage 3 - Beta: Beta is in Oslo." + OFFICIAL_QUESTION
    assert bench.history_messages(context) == [{"role": "user", "content": OFFICIAL_PASSAGES}]
    assert bench.generation(item).max_new_tokens == 32 and not bench.generation(item).do_sample


# (output, gold) -> official {em, f1}, old paper f1 (only the yes/no rule differs)
HOTPOT_SCORES = [
    ("\n The Oslo.\nextra", "Oslo", 1.0, 1.0, 1.0),
    ("yes it is", "yes", 0.0, 0.0, 0.5),
    ("The U.S.-based firm's CEO", "u s based firm s ceo", 0.0, 2 / 9, 2 / 9),  # [usbased, firms, ceo] vs 6 tokens
    ("apple-pie", "apple pie", 0.0, 0.0, 0.0),
    ("", "Oslo", 0.0, 0.0, 0.0),
    ("...", "!!", 1.0, 0.0, 0.0),  # both normalise to "": EM 1, F1 0
    ("noanswer", "no answer", 0.0, 0.0, 0.0),
    ("Oslo, Norway", "Oslo", 0.0, 2 / 3, 2 / 3),  # not rounded
]


@pytest.mark.parametrize("output, gold, em, f1_official, f1_v0", HOTPOT_SCORES)
def test_hotpot_official_and_v0_scores(output, gold, em, f1_official, f1_v0):
    item = Item("x", "q", [gold])
    official = HotpotQA(source="unused.json", protocol="official").score(output, item)
    assert official == {"em": em, "f1": pytest.approx(f1_official, abs=1e-12)}
    old_paper = HotpotQA(source="unused.json", protocol=HOTPOT_V0).score(output, item)
    assert old_paper == {"em": em, "f1": pytest.approx(f1_v0, abs=1e-12)}


# ----------------------------------------------------------------------------- GPQA

GPQA_V0 = "paper_v0"  # today's GPQA `paper`: sha256 permutation with seed 0, this prompt, the old cascade
GPQA_CSV = Path(__file__).resolve().parent / "fixtures" / "gpqa_fixture.csv"  # invented questions


def test_gpqa_v0_prompt_and_order():
    from evals.gpqa import GPQADiamond

    bench = GPQADiamond(source=str(GPQA_CSV), protocol=GPQA_V0)
    items = bench.load()[1]
    assert [i.meta["permutation"] for i in items[:2]] == [[2, 1, 0, 3], [1, 0, 3, 2]]
    assert [i.id for i in items[:2]] == ["recFixtureQ0000001/s0", "recFixtureQ0000002/s0"]
    content = bench.prompt(items[0], None, "no_context")[0]["content"]
    assert content == (
        "Answer the following multiple-choice question. Reason step by step if it helps, then end your reply with "
        'your final answer as JSON, exactly {"answer": "X"}, where X is one of A, B, C or D.\n\n'
        "Question: A toy cart of mass 2 kg is pushed with a constant net force of 6 N. What is its acceleration?\n\n"
        "A) 0.33 m/s^2\nB) 12 m/s^2\nC) 3 m/s^2\nD) 8 m/s^2"
    )
    after_think = bench.score("<think>the answer is A</think> maybe b", items[0])
    assert after_think == {"accuracy": 0.0, "extraction_failed": 0.0}  # A, read from inside the think block
    # lower-case letters are not read outside JSON: "a" is an article here
    assert bench.score("The correct answer is a subtle one.", items[0])["extraction_failed"] == 1.0
    assert bench.score("Answer: c", items[0]) == {"accuracy": 0.0, "extraction_failed": 1.0}
