"""LoCoMo and HotpotQA: golden metric values, prompt structure, real-file loaders, data errors, aggregation.

Synthetic records below are invented for the tests; the real files are read from `data_dir`. The
prompt and scorer tests here pin the harness's own protocols (LoCoMo paper_v0, HotpotQA official);
the release-exact `paper` protocols are tested rule by rule in test_locomo_paper.py and
test_hotpotqa_gpqa_paper.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evals.hotpotqa import PAPER_NUMBERS as HOTPOT_PAPER
from evals.hotpotqa import HotpotQA, hotpot_f1
from evals.locomo import PAPER_NUMBERS as LOCOMO_PAPER
from evals.locomo import LoCoMo
from evals.locomo_score import postprocess_v0, score_release, score_v0
from evals.text_metrics import exact_match, locomo_f1, normalize_answer, normalize_locomo
from evals.types import BenchmarkDataError, Item

# ----------------------------------------------------------------------------- fixtures


def _turn(speaker: str, dia: str, text: str, caption: str | None = None) -> dict:
    return {"speaker": speaker, "dia_id": dia, "text": text} | ({"blip_caption": caption} if caption else {})


def locomo_sample(sample_id: str = "s-1") -> dict:
    """Three sessions numbered 1, 2, 10 (so numeric, not lexical, order matters)."""
    conversation = {
        "speaker_a": "Ann",
        "speaker_b": "Bo",
        "session_1_date_time": "1 May 2020",
        "session_1": [_turn("Ann", "D1:1", "I bought a kite."), _turn("Bo", "D1:2", "Nice!", "a photo of a red kite")],
        "session_2_date_time": "9 June 2020",
        "session_2": [_turn("Ann", "D2:1", "The kite broke.")],
        "session_10_date_time": "3 July 2021",
        "session_10": [_turn("Bo", "D10:1", "I moved to Oslo."), _turn("Ann", "D10:2", "Good luck there.")],
        "session_11_date_time": "never held",  # a date without a session, as in the official file
    }
    qa = [
        {"question": "What did Ann buy?", "answer": "a kite", "evidence": ["D1:1"], "category": 4},
        {"question": "When did the kite break?", "answer": 2020, "evidence": ["D2:1"], "category": 2},
        {"question": "Where does Bo live?", "evidence": ["D10:1"], "category": 5, "adversarial_answer": "Rome"},
    ]
    return {"sample_id": sample_id, "conversation": conversation, "qa": qa}


def write_json(path: Path, data) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


@pytest.fixture
def tiny_locomo(tmp_path) -> LoCoMo:
    path = write_json(tmp_path / "locomo.json", [locomo_sample()])
    return LoCoMo(source=path, include_adversarial=True, protocol="paper_v0")


def hotpot_record(qid: str = "h1", answer: str = "Oslo") -> dict:
    return {
        "_id": qid,
        "question": "Which city is the capital?",
        "answer": answer,
        "context": [["Alpha", ["Alpha is a town.", " It is small."]], ["Beta", ["Beta is a capital."]]],
        "supporting_facts": [["Beta", 0]],
    }


# ----------------------------------------------------------------------------- LoCoMo metric


def test_locomo_normalisation_and_stemming():
    # commas dropped, lowercase, punctuation gone, a/an/the/and removed, spaces collapsed
    assert normalize_locomo("The Cat, and  a Dog!") == "cat dog"
    # "running dogs" -> stems [run, dog]; "the dog runs" -> "dog runs" -> [dog, run]: same bag, F1 = 1
    assert locomo_f1("running dogs", "the dog runs") == pytest.approx(1.0)
    # pred [he, wa, paint, sunset] vs gold "painting sunset" -> [paint, sunset]: 2 common,
    # P = 2/4, R = 2/2, F1 = 2 * 0.5 * 1 / 1.5 = 2/3
    assert locomo_f1("He was painting sunsets", "painting a sunset") == pytest.approx(2 / 3)
    assert locomo_f1("Oslo", "Rome") == 0.0


@pytest.mark.parametrize("score_locomo", [score_v0, score_release])
def test_locomo_category_rules(score_locomo):
    # cat 1: gold parts "pottery", "camping"; pred parts "pottery class", "camping".
    # pottery: best over preds = F1(pottery class, pottery) = 2*(1/2*1)/(3/2) = 2/3; camping: 1 -> mean 5/6
    assert score_locomo("pottery class, camping", "pottery, camping", 1) == pytest.approx(5 / 6, abs=5e-5)
    # same strings as plain F1 (cat 4): commas dropped, [potteri, class, camp] vs [potteri, camp]:
    # P = 2/3, R = 1, F1 = 0.8
    assert score_locomo("pottery class, camping", "pottery, camping", 4) == pytest.approx(0.8)
    # cat 1, a gold part with no match counts 0: (1 + 1 + 0) / 3
    assert score_locomo("hiking, painting", "painting, hiking, swimming", 1) == pytest.approx(2 / 3, abs=5e-5)
    # cat 3: gold cut at the first ';' -> "Likely yes" == pred -> 1
    assert score_locomo("likely yes", "Likely yes; she enjoys the outdoors", 3) == pytest.approx(1.0)
    # without the cut (cat 2): [like, ye] vs [like, ye, she, enjoy, outdoor]: P = 1, R = 2/5, F1 = 4/7
    assert score_locomo("likely yes", "Likely yes; she enjoys the outdoors", 2) == pytest.approx(4 / 7, abs=5e-5)
    # integer gold answers are compared as strings
    assert score_locomo("2022", 2022, 2) == pytest.approx(1.0)


def test_locomo_postprocess_and_adversarial(tiny_locomo):
    assert postprocess_v0("\n  \nAnswer: Paris, France\nsecond line") == "paris, france"
    assert postprocess_v0("(a) Not mentioned in the conversation") == "not mentioned in the conversation"
    _, items = tiny_locomo.load()
    adversarial = next(i for i in items if i.category == "5")
    assert tiny_locomo.score("(b) Not mentioned in the conversation.", adversarial) == {"f1": 1.0}
    assert tiny_locomo.score("No information available.", adversarial) == {"f1": 1.0}
    assert tiny_locomo.score("Rome\nnot mentioned", adversarial) == {"f1": 0.0}  # only the first line counts
    temporal = next(i for i in items if i.category == "2")
    assert temporal.answers == ["2020"]
    assert tiny_locomo.score("Answer: in 2020", temporal)["f1"] == pytest.approx(2 / 3)  # [in, 2020] vs [2020]


# ----------------------------------------------------------------------------- LoCoMo prompts


def test_locomo_prompt_structure(tiny_locomo):
    contexts, items = tiny_locomo.load()
    context = contexts[0]
    by_cat = {i.category: i for i in items}
    system, user = tiny_locomo.prompt(by_cat["4"], context, "full_context")
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    assert "Ann" in text.split("\n")[0] and "Bo" in text.split("\n")[0]  # header names both speakers
    dates = [line for line in text.splitlines() if line.startswith("DATE: ")]
    assert dates == ["DATE: 3 July 2021", "DATE: 9 June 2020", "DATE: 1 May 2020"]  # most recent first
    assert "DATE: never held" not in text
    assert text.count("CONVERSATION:") == 3
    assert 'DATE: 1 May 2020\nCONVERSATION:\nAnn said, "I bought a kite."\n' in text
    assert 'Bo said, "Nice!" and shared a photo of a red kite.' in text
    assert text.endswith("Question: What did Ann buy?")
    assert "DATE of the conversation" in tiny_locomo.prompt(by_cat["2"], context, "full_context")[1]["content"]
    assert "DATE of the conversation" not in text
    assert "(a) " in tiny_locomo.question_text(by_cat["5"]) and "Rome" in tiny_locomo.question_text(by_cat["5"])
    for condition in ("no_context", "memory_only"):
        bare = tiny_locomo.prompt(by_cat["4"], None, condition)[1]["content"]
        assert "DATE:" not in bare and "said," not in bare and bare.endswith("Question: What did Ann buy?")
    # the runner writes the history chronologically, one message per session
    history = tiny_locomo.history_messages(context)
    assert [m["content"].split("\n")[0] for m in history] == [
        "DATE: 1 May 2020",
        "DATE: 9 June 2020",
        "DATE: 3 July 2021",
    ]
    assert tiny_locomo.history_text(context).index("kite") < tiny_locomo.history_text(context).index("Oslo")


def test_locomo_recent_window(tmp_path):
    source = write_json(tmp_path / "locomo.json", [locomo_sample()])
    by_turns = LoCoMo(source=source, window_turns=2, protocol="paper_v0")
    contexts, items = by_turns.load()
    text = by_turns.prompt(items[0], contexts[0], "recent_window")[1]["content"]
    assert "Oslo" in text and "Good luck there." in text and "kite" not in text
    # chars: the last turn rendered is 'Ann said, "Good luck there."' (28 chars + newline) -> 40 fits one turn
    by_chars = LoCoMo(source=source, window_chars=40, protocol="paper_v0")
    text = by_chars.prompt(items[0], contexts[0], "recent_window")[1]["content"]
    assert "Good luck there." in text and "Oslo" not in text and "DATE: 3 July 2021" in text
    with pytest.raises(ValueError):
        by_chars.prompt(items[0], contexts[0], "retrieval")


# ----------------------------------------------------------------------------- LoCoMo real file


def test_locomo_real_file(data_dir):
    path = str(data_dir / "locomo10.json")
    bench = LoCoMo(source=path, protocol="paper_v0")  # v0: one index over the whole file
    contexts, items = bench.load()
    assert len(contexts) == 10 and len(items) == 1540
    assert Counter(i.category for i in items) == {"1": 282, "2": 321, "3": 96, "4": 841}
    assert all(isinstance(i.answers[0], str) and i.context_id for i in items)
    assert all(isinstance(i.meta["evidence"], list) for i in items)
    indices = [i.meta["question_index"] for i in items]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    gen = bench.generation(items[10])
    assert (gen.do_sample, gen.temperature, gen.top_p, gen.top_k, gen.max_new_tokens) == (True, 0.4, 0.9, 10, 50)
    assert gen.seed == 42 + items[10].meta["question_index"]
    everything = LoCoMo(source=path, include_adversarial=True, protocol="paper_v0").load()[1]
    assert len(everything) == 1986 and sum(i.category == "5" for i in everything) == 446
    assert max(i.meta["question_index"] for i in everything) == 1985


def test_locomo_malformed_records(tmp_path):
    def error_for(sample: dict, **kwargs) -> str:
        path = write_json(tmp_path / "bad.json", [locomo_sample("ok-0"), sample])
        with pytest.raises(BenchmarkDataError) as info:
            LoCoMo(source=path, **kwargs).load()
        return str(info.value)

    sample = locomo_sample("bad-1")
    del sample["qa"][1]["question"]
    message = error_for(sample)
    assert "bad.json" in message and "sample 1" in message and "bad-1" in message
    assert "qa 1" in message and "'question'" in message
    sample = locomo_sample("bad-1")
    del sample["qa"][0]["answer"]
    assert "qa 0" in error_for(sample) and "'answer'" in error_for(sample)
    sample = locomo_sample("bad-1")
    del sample["qa"][2]["adversarial_answer"]
    assert "'adversarial_answer'" in error_for(sample, include_adversarial=True)
    sample = locomo_sample("bad-1")
    del sample["conversation"]["speaker_b"]
    assert "'speaker_b'" in error_for(sample)
    sample = locomo_sample("bad-1")
    del sample["conversation"]["session_2"][0]["text"]
    assert "session_2 turn 0" in error_for(sample) and "'text'" in error_for(sample)
    sample = locomo_sample("bad-1")
    del sample["conversation"]["session_10_date_time"]
    assert "'session_10_date_time'" in error_for(sample)
    sample = locomo_sample("bad-1")
    del sample["sample_id"]
    assert "sample 1" in error_for(sample) and "'sample_id'" in error_for(sample)


def test_locomo_aggregate_and_paper_numbers(tmp_path):
    rows = [
        {"category": "1", "f1": 1.0},
        {"category": "1", "f1": 0.0},
        {"category": "4", "f1": 1.0},
        {"category": "5", "f1": 1.0},
    ]
    paper = LoCoMo(source="unused.json").aggregate(rows)
    # question-weighted over categories 1-4: (1 + 0 + 1) / 3 = 66.67 (the category mean would be 75)
    assert paper["overall"] == pytest.approx(200 / 3) and paper["n"] == 3 and paper["protocol"] == "paper"
    assert paper["per_category"]["1"] == {"f1": 50.0, "n": 2}
    assert paper["per_category"]["5"] == {"f1": 100.0, "n": 1}  # reported separately
    # under the official protocol too, category 5 is reported apart, and the policy says so
    official = LoCoMo(source="unused.json", protocol="official").aggregate(rows)
    assert official["overall"] == pytest.approx(200 / 3) and official["n"] == 3 and official["protocol"] == "official"
    assert official["per_category"]["5"] == {"f1": 100.0, "n": 1}
    assert official["overall_policy"] == paper["overall_policy"]
    assert "category 5 (adversarial) is reported apart" in paper["overall_policy"]
    assert paper["category_names"]["2"] == "temporal"
    # the paper's frozen overall is the question-weighted mean of its categories (282/321/96/841)
    frozen = LOCOMO_PAPER["frozen"]
    counts = {"1": 282, "2": 321, "3": 96, "4": 841}
    weighted = sum(frozen[c] * n for c, n in counts.items()) / sum(counts.values())
    assert weighted == pytest.approx(frozen["overall"], abs=0.02)


# ----------------------------------------------------------------------------- HotpotQA


def test_hotpot_metric():
    # EM after normalisation: lowercase, punctuation and articles dropped, spaces collapsed
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("The  Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("apple-pie", "apple pie") == 0.0  # '-' is removed, not spaced: "applepie"
    # F1: [eiffel, tower, in, paris] vs [eiffel, tower]: P = 1/2, R = 1, F1 = 2/3
    assert hotpot_f1("the Eiffel Tower in Paris", "Eiffel Tower") == pytest.approx(2 / 3)
    # yes/no/noanswer: a mismatch on either side is 0 ...
    assert hotpot_f1("yes", "no") == 0.0
    assert hotpot_f1("yes it is", "yes") == 0.0  # gold is special, pred differs
    assert hotpot_f1("noanswer", "no answer") == 0.0  # pred is special, gold "no answer" differs
    assert hotpot_f1("Yes.", "yes") == 1.0
    # ... which the public δ-mem release ("paper") omits: [yes, it, is] vs [yes]: P = 1/3, R = 1, F1 = 1/2
    assert hotpot_f1("yes it is", "yes", yes_no_rule=False) == pytest.approx(0.5)


def test_hotpot_score_prompt_and_shapes(tmp_path):
    official = write_json(tmp_path / "hotpot.json", [hotpot_record()])
    hf_shape = hotpot_record()
    hf_shape["id"] = hf_shape.pop("_id")
    hf_shape["context"] = {
        "title": ["Alpha", "Beta"],
        "sentences": [["Alpha is a town.", " It is small."], ["Beta is a capital."]],
    }
    hf_shape["supporting_facts"] = {"title": ["Beta"], "sent_id": [0]}
    hf_shape |= {"type": "bridge", "level": "easy"}
    hf = write_json(tmp_path / "hotpot_hf.json", [hf_shape])
    bench = HotpotQA(source=official)
    (context,), (item,) = bench.load()
    (hf_context,), (hf_item,) = HotpotQA(source=hf).load()
    assert context.meta["passages"] == hf_context.meta["passages"]
    assert item.meta["supporting_facts"] == hf_item.meta["supporting_facts"] == [("Beta", 0)]
    assert (item.category, hf_item.category, hf_item.meta["level"]) == (None, "bridge", "easy")
    (message,) = bench.prompt(item, context, "full_context")
    assert message["role"] == "user"
    text = message["content"]
    assert "Passage 1 - Alpha: Alpha is a town. It is small.\n\nPassage 2 - Beta: Beta is a capital." in text
    assert text.endswith("\n\nQuestion: Which city is the capital?\nAnswer:")
    (bare,) = bench.prompt(item, None, "no_context")
    assert "Passage" not in bare["content"] and bare["content"].endswith("Answer:")
    window = HotpotQA(source=official, window_chars=40).prompt(item, context, "recent_window")[0]["content"]
    assert "Passage 2 - Beta" in window and "Passage 1" not in window  # original numbering kept
    assert bench.generation(item).max_new_tokens == 32 and not bench.generation(item).do_sample
    assert bench.score("\n The Oslo.\nextra", item) == {"em": 1.0, "f1": 1.0}
    yes_item = Item("y", "q", ["yes"])
    assert bench.score("yes, it is", yes_item)["f1"] == 0.0
    for protocol in ("paper", "paper_v0"):  # neither has the yes/no rule: [yes, it, is] vs [yes] -> 0.5
        assert HotpotQA(source=official, protocol=protocol).score("yes, it is", yes_item)["f1"] == 0.5


def test_hotpot_real_file(data_dir):
    path = str(data_dir / "hotpot_dev_distractor_subset500.json")
    bench = HotpotQA(source=path)
    contexts, items = bench.load()
    assert len(contexts) == len(items) == 500 and len({i.id for i in items}) == 500
    assert all(i.context_id == c.id for i, c in zip(items, contexts))
    assert len(HotpotQA(source=path, limit=7).load()[1]) == 7
    passages = contexts[0].meta["passages"]
    text = bench.prompt(items[0], contexts[0], "full_context")[0]["content"]
    positions = [text.index(f"Passage {i} - {title}:") for i, (title, _) in enumerate(passages, start=1)]
    assert positions == sorted(positions) and f"Passage {len(passages) + 1} -" not in text


def test_hotpot_malformed_and_aggregate(tmp_path):
    bad = hotpot_record("h2")
    del bad["answer"]
    path = write_json(tmp_path / "bad_hotpot.json", [hotpot_record(), bad])
    with pytest.raises(BenchmarkDataError, match=r"bad_hotpot\.json: record 1 \(h2\): missing field 'answer'"):
        HotpotQA(source=path).load()
    broken = hotpot_record("h3")
    broken["context"] = [["Alpha"]]
    with pytest.raises(BenchmarkDataError, match="context entry 0"):
        HotpotQA(source=write_json(tmp_path / "broken.json", [broken])).load()
    rows = [
        {"category": "bridge", "em": 1.0, "f1": 1.0},
        {"category": "bridge", "em": 0.0, "f1": 0.5},
        {"category": "comparison", "em": 0.0, "f1": 0.0},
    ]
    result = HotpotQA(source=path).aggregate(rows)
    # EM (1 + 0 + 0) / 3 = 33.33; F1 (1 + 0.5 + 0) / 3 = 50
    assert result["overall"] == result["em"] == pytest.approx(100 / 3) and result["f1"] == pytest.approx(50.0)
    assert result["n"] == 3 and result["per_category"]["bridge"] == {"em": 50.0, "f1": 75.0, "n": 2}
    assert HOTPOT_PAPER["frozen"] == {"em": 42.35, "f1": 56.00} and HOTPOT_PAPER["tsw"]["f1"] == 63.66
