"""Real-data episode sources (COVID-QA, FriendsQA, L-Eval, BAMBOO, the blend): invented fixtures in the
upstream schemas, plus checks on the real files when the data directory is present."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hydra.utils import instantiate

from deltamem.train_data import (
    BambooEpisodes,
    BlendEpisodes,
    CovidQAEpisodes,
    FriendsQAEpisodes,
    LEvalEpisodes,
)
from deltamem.train_data.bamboo import parse_content
from deltamem.train_data.documents import chunk_spans, document_split, squash
from deltamem.train_data.friendsqa import clean_answer

from conftest import REPO_ROOT
from test_param_counts import compose_cfg

FIX = REPO_ROOT / "tests" / "fixtures"
FILES = {
    "covidqa": {"path": str(FIX / "real_covidqa.json")},
    "friendsqa": {"paths": [str(FIX / "real_friendsqa_a.json"), str(FIX / "real_friendsqa_b.json")]},
    "leval": {"paths": [str(FIX / "real_leval_sci.jsonl"), str(FIX / "real_leval_nq.jsonl")]},
    "bamboo": {"path": str(FIX / "real_bamboo.jsonl")},
}
CLASSES = {"covidqa": CovidQAEpisodes, "friendsqa": FriendsQAEpisodes, "leval": LEvalEpisodes, "bamboo": BambooEpisodes}
EXTRACTIVE = ("covidqa", "friendsqa", "bamboo")
NAMES = sorted(CLASSES)


def make(name: str, **options):
    return CLASSES[name](**FILES[name], **options)


def estimated_tokens(messages: list[dict], cpt: float = 3.5, overhead: int = 5) -> float:
    return sum(len(m["content"]) / cpt + overhead for m in messages)


def history_of(record: dict) -> list[dict]:
    return record["messages"][:-2]


@pytest.mark.parametrize("name", NAMES)
def test_record_shape_roles_and_question(name):
    src = make(name, split="all", system_prompt_prob=1.0)
    assert len(src) == {"covidqa": 18, "friendsqa": 20, "leval": 19, "bamboo": 8}[name]
    for record in src:
        assert set(record) == {"id", "messages", "answer", "meta"}
        roles = [m["role"] for m in record["messages"]]
        assert roles[0] == "system" and roles[-1] == "assistant" and roles[-2] == "user"
        assert set(roles[1:-1]) == {"user"}  # history of user messages only, no acknowledgements
        assert record["messages"][-1]["content"] == record["answer"] != ""
        question = record["messages"][-2]["content"]
        asked = question.split("Question: ")[1]
        assert question == src.instructions[record["meta"]["instruction"]].format(question=asked)
        assert "\n\nQuestion: " in question  # the YAML-style templates keep their blank line
        assert record["id"] == f"{name}:{record['meta']['question_id']}"
        meta = record["meta"]
        assert meta["source"] == name and meta["num_distractors"] == meta["num_documents"] - 1
        assert meta["split"] in ("train", "dev") and 0 <= meta["target_position"] < meta["num_documents"]
        headers = [m["content"].split("\n")[0] for m in history_of(record)[1:] if m["content"].startswith("Document ")]
        assert [h.split(":")[0] for h in headers] == [f"Document {k}" for k in range(1, meta["num_documents"] + 1)]


@pytest.mark.parametrize("name", NAMES)
def test_episodes_are_deterministic_and_draws_differ(name):
    a, b = make(name, split="all", seed=3), make(name, split="all", seed=3)
    assert [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]
    assert list(a) == [a[i] for i in range(len(a))]
    assert any(a.episode(i, 1)["messages"] != a[i]["messages"] for i in range(len(a)))
    assert a.episode(0, 2)["id"] == a[0]["id"] + "#2"
    with pytest.raises(IndexError, match="out of range"):
        a[len(a)]


def test_system_prompt_probability_and_templates():
    never, always = make("covidqa", system_prompt_prob=0.0), make("covidqa", system_prompt_prob=1.0)
    assert all(r["messages"][0]["role"] == "user" for r in never)
    assert all(r["messages"][0] == {"role": "system", "content": always.system_prompt} for r in always)
    half = make("friendsqa", split="all")
    assert 0 < sum(r["meta"]["system_prompt"] for r in half) < len(half)
    assert all(r["messages"][0]["role"] == "user" for r in make("bamboo", system_prompt=None, system_prompt_prob=1.0))
    custom = make("bamboo", instructions=["Q? {question}"])
    assert custom[0]["messages"][-2]["content"].startswith("Q? when was the brisk lighthouse")
    with pytest.raises(ValueError, match="containing '\\{question\\}'"):
        make("bamboo", instructions=["no placeholder"])
    with pytest.raises(ValueError, match="split must be one of"):
        make("bamboo", split="test")


@pytest.mark.parametrize("name", NAMES)
def test_split_by_document_is_disjoint_and_distractors_share_the_split(name):
    src = make(name, split="all", dev_fraction=0.5)
    docs = src.split_documents()
    assert docs["train"] and docs["dev"] and not set(docs["train"]) & set(docs["dev"])
    train, dev = make(name, split="train", dev_fraction=0.5), make(name, split="dev", dev_fraction=0.5)
    assert len(train) + len(dev) == len(src) and len(train) > 0 and len(dev) > 0
    for part, records in (("train", train), ("dev", dev)):
        for r in records:
            assert r["meta"]["split"] == part and r["meta"]["doc_id"] in docs[part]
            assert set(r["meta"]["distractor_ids"]) <= set(docs[part]) - {r["meta"]["doc_id"]}
    assert any(r["meta"]["num_distractors"] > 0 for r in train)


def test_split_of_a_document_ignores_the_other_documents(tmp_path):
    data = json.loads((FIX / "real_covidqa.json").read_text())
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps({"data": data["data"][:3]}))
    full = CovidQAEpisodes(path=str(FIX / "real_covidqa.json"), dev_fraction=0.5)
    part = CovidQAEpisodes(path=str(fewer), dev_fraction=0.5)
    full_split = {d: s for s, ids in full.split_documents().items() for d in ids}
    part_split = {d: s for s, ids in part.split_documents().items() for d in ids}
    assert sorted(part_split) == ["101", "102", "103"]
    assert all(full_split[d] == s for d, s in part_split.items())
    assert document_split("covidqa", "101", 0.5) == full_split["101"]
    assert document_split("covidqa", "101", 0.0) == "train" and document_split("covidqa", "101", 1.0) == "dev"


@pytest.mark.parametrize("name", NAMES)
def test_target_fully_present_when_it_fits(name):
    src = make(name, split="all", max_history_tokens=8192)
    for r in src:
        meta, target = r["meta"], src._docs[r["meta"]["doc_id"]]
        assert meta["target_complete"] and meta["target_window"] == [0, len(target.pieces)]
        history = [m["content"] for m in history_of(r) if m["role"] == "user"]
        first = next(k for k, text in enumerate(history) if text.endswith("\n" + target.pieces[0]))
        assert history[first].startswith(f"Document {meta['target_position'] + 1}")
        assert history[first + 1 : first + len(target.pieces)] == list(target.pieces[1:])
        if name in EXTRACTIVE:
            assert meta["answer_in_history"]
            assert squash(r["answer"]) in squash(" ".join(history))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("budget", [160, 300, 700])
def test_budget_respected_and_evidence_kept_when_windowed(name, budget):
    src = make(name, split="all", max_history_tokens=budget, chunk_chars=200)
    windowed = 0
    for r in src:
        assert estimated_tokens(history_of(r)) <= 0.9 * budget
        assert r["meta"]["history_tokens"] == pytest.approx(estimated_tokens(history_of(r)), abs=0.1)
        windowed += not r["meta"]["target_complete"]
        if name in EXTRACTIVE:
            assert r["meta"]["answer_in_history"], r["id"]
            text = squash(" ".join(m["content"] for m in history_of(r)))
            assert squash(r["answer"]) in text
    if budget == 160:
        assert windowed > 0


def test_leval_window_holds_the_most_output_words():
    src = make("leval", split="all", max_history_tokens=250, chunk_chars=200, distractors=False)
    heron = [r for r in src if "herons" in r["answer"]]
    assert len(heron) == 9  # one per distinct document: the answer sentence of that document
    assert all(not r["meta"]["target_complete"] and r["meta"]["num_distractors"] == 0 for r in heron)
    assert all("counted forty silver herons" in " ".join(m["content"] for m in history_of(r)) for r in heron)


def test_covidqa_answers_offsets_and_impossible_questions():
    src = make("covidqa", split="all", system_prompt_prob=0.0)
    answers = {r["meta"]["question_id"]: r["answer"] for r in src}
    assert len(answers) == 18  # 6 papers x 3 answerable; the is_impossible ones are skipped
    assert answers["9006"] == "a yield of 21 units per flask."  # its answer_start is 2 characters off
    assert all(not a.endswith(" ") for a in answers.values())


def test_friendsqa_episode_document_rendering_and_answers():
    src = make("friendsqa", split="all", max_history_tokens=8192, system_prompt_prob=0.0)
    src._load()
    docs = src._docs
    assert sorted(docs) == ["s01_e01", "s01_e02", "s01_e03", "s02_e01", "s02_e02", "s02_e03"]
    scenes = json.loads((FIX / "real_friendsqa_a.json").read_text())["data"]
    scenes += json.loads((FIX / "real_friendsqa_b.json").read_text())["data"]
    by_id = {s["title"]: s["paragraphs"][0]["utterances:"] for s in scenes}
    expected = [
        f"{' and '.join(u['speakers'])}: {u['utterance']}"
        for c in ("c01", "c02", "c03")  # c02 comes first in file a, c03 from file b: cNN order wins
        for u in by_id[f"s01_e01_{c}"]
    ]
    assert list(docs["s01_e01"].pieces) == expected
    assert any(" and " in p.split(":")[0] for p in expected)
    assert docs["s01_e01"].title == "Friends, season 1 episode 1"
    record = next(r for r in src if r["meta"]["question_id"] == "s01_e01_c03_Where")
    assert record["answer"].startswith("in the s01e01c03-token-") and record["answer"].endswith(" jar")
    assert record["messages"][-2]["content"].endswith("Question: Where did someone hide the note?")
    speaker = next(r for r in src if r["meta"]["question_id"] == "s01_e01_c03_Who")
    assert speaker["meta"]["is_speaker"]
    assert speaker["answer"] in {"Mara Quill", "Otto Fenn", "Lena Brisk", "Pim Dorsey"}
    assert clean_answer(" Jordie . ") == "Jordie" and clean_answer("first class , !") == "first class"
    assert clean_answer("a half - hour .") == "a half - hour" and clean_answer("I do n't") == "I do n't"


def test_bamboo_parses_both_orders():
    assert parse_content("Intro\n\nDocument:\nText 12.\n\nQuestion:\nhow many\n") == ("Text 12.", "how many")
    assert parse_content("Intro\n\nQuestion:\nhow many\n\nDocument:\nText 12.\n") == ("Text 12.", "how many")
    src = make("bamboo", split="all")
    assert [r["answer"] for r in src] == [str(1700 + 37 * k) for k in range(8)]
    assert [r["messages"][-2]["content"].split("Question: ")[1] for r in src][1] == (
        "when was the brisk lighthouse of isle 1 first lit"
    )
    assert len(src.split_documents()["train"] + src.split_documents()["dev"]) == 8


def test_chunk_spans_cut_at_boundaries():
    text = "Alpha beta.\n\nGamma delta. Epsilon zeta eta theta.\nIota " + "x" * 50 + " <P> kappa </P>"
    spans = chunk_spans(text, 30)
    pieces = [text[s:e] for s, e in spans]
    assert all(len(p) <= 30 for p in pieces) and "".join("".join(pieces).split()) == "".join(text.split())
    # short paragraphs merge up to the limit; a long one is cut at its sentence end; a long word hard-cut
    assert pieces[:2] == ["Alpha beta.\n\nGamma delta.", "Epsilon zeta eta theta.\nIota"]
    assert pieces[2:] == ["x" * 29, "x" * 21, "<P> kappa </P>"]
    assert chunk_spans("one. two. three.", 100) == [(0, 16)]
    assert chunk_spans("   \n\n  ", 10) == []


def _write_json(tmp_path: Path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_malformed_records_name_file_record_and_field(tmp_path):
    covid = json.loads((FIX / "real_covidqa.json").read_text())
    del covid["data"][1]["paragraphs"][0]["qas"][2]["answers"]
    path = _write_json(tmp_path, "covid_bad.json", covid)
    with pytest.raises(ValueError, match=r"^covid_bad\.json: paper 1 \(id 102\), qa 2: missing field 'answers'$"):
        len(CovidQAEpisodes(path=path))
    friends = json.loads((FIX / "real_friendsqa_a.json").read_text())
    del friends["data"][2]["paragraphs"][0]["utterances:"][4]["speakers"]
    path = _write_json(tmp_path, "fr_bad.json", friends)
    msg = r"^fr_bad\.json: scene 2 \(id s01_e02_c01\), utterance 4: missing field 'speakers'$"
    with pytest.raises(ValueError, match=msg):
        len(FriendsQAEpisodes(paths=[path]))
    friends = json.loads((FIX / "real_friendsqa_a.json").read_text())
    friends["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["utterance_id"] = 999
    path = _write_json(tmp_path, "fr_bad2.json", friends)
    msg = r"^fr_bad2\.json: scene 0 \(id s01_e01_c02\), qa 1: field 'answers\[0\]\.utterance_id' \(999\)"
    with pytest.raises(ValueError, match=msg):
        len(FriendsQAEpisodes(paths=[path]))
    rows = (FIX / "real_leval_sci.jsonl").read_text().splitlines()
    row = json.loads(rows[2])
    row["outputs"] = row["outputs"][:1]
    path = tmp_path / "lv_bad.jsonl"
    path.write_text("\n".join([rows[0], rows[1], json.dumps(row)]) + "\n")
    with pytest.raises(ValueError, match=r"^lv_bad\.jsonl: document 2 \(id lv_bad:\w+\): fields 'instructions' and"):
        len(LEvalEpisodes(paths=[str(path)]))
    path.write_text(rows[0] + "\n" + json.dumps({"instructions": [], "outputs": []}) + "\n")
    with pytest.raises(ValueError, match=r"^lv_bad\.jsonl: document 1: missing field 'input'"):
        len(LEvalEpisodes(paths=[str(path)]))
    path = tmp_path / "bb_bad.jsonl"
    path.write_text(json.dumps({"content": "Document:\nsome text", "answer": "12"}) + "\n")
    with pytest.raises(ValueError, match=r"^bb_bad\.jsonl: record 0: field 'content': no 'Question:' marker$"):
        len(BambooEpisodes(path=str(path)))
    path.write_text(json.dumps({"content": "Question:\nq\n\nDocument:\nx"}) + "\n")
    with pytest.raises(ValueError, match=r"^bb_bad\.jsonl: record 0: missing field 'answer'$"):
        len(BambooEpisodes(path=str(path)))


def test_missing_file_names_path_and_env_var(tmp_path):
    src = CovidQAEpisodes(path=str(tmp_path / "nope.json"))  # construction is free: nothing read yet
    with pytest.raises(FileNotFoundError, match=r"nope\.json: no such file; set DELTAMEM_DATA_DIR"):
        len(src)


def test_blend_weights_draws_and_order():
    sources = {"bamboo": make("bamboo", split="all"), "covidqa": make("covidqa", split="all")}
    blend = BlendEpisodes(sources=sources, weights={"bamboo": 2.0, "covidqa": 0.5}, seed=1)
    assert len(blend) == 8 * 2 + 9 and blend.counts() == {"bamboo": 16, "covidqa": 9}
    ids = [r["id"] for r in blend]
    assert len(set(ids)) == len(ids)
    assert sum(i.startswith("bamboo:") and i.endswith("#1") for i in ids) == 8
    assert ids == [r["id"] for r in BlendEpisodes(sources=sources, weights={"bamboo": 2.0, "covidqa": 0.5}, seed=1)]
    assert ids != [r["id"] for r in BlendEpisodes(sources=sources, weights={"bamboo": 2.0, "covidqa": 0.5}, seed=2)]
    repeat = next(r for r in blend if r["id"] == "bamboo:3#1")
    assert repeat["meta"]["blend_source"] == "bamboo" and repeat["meta"]["draw"] == 1
    assert repeat["messages"] == sources["bamboo"].episode(3, 1)["messages"]
    assert len(BlendEpisodes(sources=sources, seed=0)) == 8 + 18
    assert len(BlendEpisodes(sources=sources, seed=0, num_episodes=5)) == 5
    with pytest.raises(ValueError, match="num_episodes=100 exceeds the blend's 26 episodes"):
        len(BlendEpisodes(sources=sources, num_episodes=100))
    with pytest.raises(ValueError, match=r"weights name unknown sources \['qasper'\]"):
        BlendEpisodes(sources=sources, weights={"qasper": 1.0})


FIXTURE_OVERRIDES = {
    "covidqa": f"train_data.path={FILES['covidqa']['path']}",
    "friendsqa": f"train_data.paths=[{','.join(FILES['friendsqa']['paths'])}]",
    "leval": f"train_data.paths=[{','.join(FILES['leval']['paths'])}]",
    "bamboo": f"train_data.path={FILES['bamboo']['path']}",
}


@pytest.mark.parametrize("name", NAMES + ["blend"])
def test_hydra_configs_instantiate(name):
    if name == "blend":
        overrides = [o.replace("train_data.", f"train_data.sources.{n}.") for n, o in FIXTURE_OVERRIDES.items()]
    else:
        overrides = [FIXTURE_OVERRIDES[name]]
    cfg = compose_cfg(f"train_data={name}", "training.max_write_length=1024", "seed=5", *overrides)
    src = instantiate(cfg.train_data)
    record = src[0]
    assert record["messages"][-1]["content"] == record["answer"]
    assert estimated_tokens(history_of(record)) <= 0.9 * 1024
    if name == "blend":
        assert set(src.sources) == set(NAMES) and src.weights["bamboo"] == 2.0
        assert all(s.max_history_tokens == 1024 and s.split == "train" and s.seed == 5 for s in src.sources.values())
        assert len(src) == sum(round(src.weights[n] * len(s)) for n, s in src.sources.items())
    else:
        assert type(src) is CLASSES[name] and src.split == "train" and src.seed == 5
        assert src.max_history_tokens == 1024 and len(src.instructions) == 2
        assert all(re.search(r"\n\nQuestion: \{question\}$", t) for t in src.instructions)


# ---- the real files (skipped without the data directory) --------------------------------------------
def real_sources(data_dir: Path, split: str, **options) -> dict:
    leval = [str(data_dir / "leval" / f"{t}.jsonl") for t in ("scientific_qa", "natural_question", "multidoc_qa")]
    return {
        "covidqa": CovidQAEpisodes(path=str(data_dir / "covidqa_200423.json"), split=split, **options),
        "friendsqa": FriendsQAEpisodes(
            paths=[str(data_dir / "friendsqa_dev.json"), str(data_dir / "friendsqa_tst.json")], split=split, **options
        ),
        "leval": LEvalEpisodes(paths=leval, split=split, **options),
        "bamboo": BambooEpisodes(path=str(data_dir / "bamboo_altqa_4k.jsonl"), split=split, **options),
    }


def test_real_counts_and_document_splits(data_dir):
    everything, train, dev = (real_sources(data_dir, s) for s in ("all", "train", "dev"))
    counts = {n: len(s) for n, s in everything.items()}
    assert counts == {"covidqa": 1380, "friendsqa": 2383, "leval": 451, "bamboo": 200}
    for name, src in everything.items():
        assert len(train[name]) + len(dev[name]) == len(src) and len(dev[name]) > 0
        docs = src.split_documents()
        assert docs["dev"] and not set(docs["train"]) & set(docs["dev"])
        assert {r["meta"]["doc_id"] for r in dev[name]} <= set(docs["dev"])
    assert len(everything["covidqa"].split_documents()["train"] + everything["covidqa"].split_documents()["dev"]) == 98
    assert len(sum(everything["friendsqa"].split_documents().values(), [])) == 17  # Friends episodes


@pytest.mark.parametrize("budget", [2048, 8192])
def test_real_episodes_within_budget_with_evidence(data_dir, budget):
    for name, src in real_sources(data_dir, "train", max_history_tokens=budget).items():
        docs = set(src.split_documents()["train"])
        for r in src:
            assert estimated_tokens(history_of(r)) <= 0.9 * budget, r["id"]
            assert set(r["meta"]["distractor_ids"]) <= docs
            if name in EXTRACTIVE:
                assert r["meta"]["answer_in_history"], r["id"]


def test_real_blend_has_enough_training_episodes(data_dir):
    blend = BlendEpisodes(sources=real_sources(data_dir, "train"), weights={"bamboo": 2.0}, seed=0)
    assert len(blend) >= 4000
    assert blend.counts()["bamboo"] == 2 * len(blend.sources["bamboo"])
    assert blend[0]["meta"]["blend_source"] in blend.sources
