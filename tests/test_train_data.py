"""Training-episode sources: synthetic chats, Qasper papers, user JSONL files (CPU, a few seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deltamem.train_data import JsonlChats, QasperRawEpisodes, SyntheticChats
from deltamem.train_data.synthetic import DEFAULT_ATTRIBUTES, _contains, episode_seed, score

FIXTURE = Path(__file__).parent / "fixtures" / "qasper_mini.json"
ALL_VALUES = [v for vals in DEFAULT_ATTRIBUTES.values() for v in vals]


def _check_shape(record: dict) -> None:
    """The common record contract: optional system first, then strictly alternating user/assistant."""
    assert set(record) == {"id", "messages", "answer", "meta"}
    roles = [m["role"] for m in record["messages"]]
    body = roles[1:] if roles[0] == "system" else roles
    assert "system" not in body and len(body) >= 2 and len(body) % 2 == 0
    assert body == ["user", "assistant"] * (len(body) // 2)
    assert record["messages"][-1]["content"] == record["answer"]
    assert all(isinstance(m["content"], str) for m in record["messages"])


# ----------------------------------------------------------------------------------------- synthetic
def test_synthetic_deterministic_and_seeded() -> None:
    a, b = SyntheticChats(num_episodes=30, seed=7), SyntheticChats(num_episodes=30, seed=7)
    assert list(a) == list(b)
    assert a[5] == a[5] == a[5 - 30]
    assert [r["messages"] for r in a] != [r["messages"] for r in SyntheticChats(num_episodes=30, seed=8)]


def test_synthetic_same_across_processes() -> None:
    """Hash randomisation must not matter: load the module by path in a fresh interpreter."""
    path = Path(__file__).resolve().parents[1] / "src" / "deltamem" / "train_data" / "synthetic.py"
    code = (
        "import importlib.util, json, sys; s = importlib.util.spec_from_file_location('syn', sys.argv[1]); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
        "print(json.dumps(m.SyntheticChats(num_episodes=5, seed=3, split='heldout')[4]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout
    assert json.loads(out) == SyntheticChats(num_episodes=5, seed=3, split="heldout")[4]


def test_train_and_heldout_are_disjoint() -> None:
    train, held = SyntheticChats(num_episodes=200), SyntheticChats(num_episodes=200, split="heldout")
    seeds = {episode_seed("train", 0, i) for i in range(200)}
    assert seeds.isdisjoint(episode_seed("heldout", 0, i) for i in range(200))
    train_msgs = {json.dumps(r["messages"]) for r in train}
    held_msgs = {json.dumps(r["messages"]) for r in held}
    assert len(train_msgs) == 200 and len(held_msgs) == 200 and train_msgs.isdisjoint(held_msgs)
    assert all(r["id"].startswith("synthetic-heldout-") for r in held)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"facts": 4, "sessions": (1, 4), "distractor_turns": 0},
        {"facts": 1, "sessions": [3, 3], "distractor_turns": 5, "system_prompt": ""},
    ],
)
def test_synthetic_structure_and_facts(kwargs: dict) -> None:
    for record in SyntheticChats(num_episodes=60, seed=1, **kwargs):
        _check_shape(record)
        meta, msgs = record["meta"], record["messages"]
        assert (msgs[0]["role"] == "system") == bool(kwargs.get("system_prompt", "x"))
        assert record["answer"] == meta["answer"] and meta["answer"] in meta["candidates"]
        assert len(meta["facts"]) == kwargs.get("facts", 2)
        users = [m["content"] for m in msgs if m["role"] == "user"]
        markers = [u.split(")")[0] for u in users if u.startswith("(Session ")]
        assert markers == [f"(Session {k}" for k in range(1, meta["sessions"] + 1)]
        assert [msgs[i]["content"].split(")")[0] for i in meta["session_starts"]] == markers  # the structure
        question, history = msgs[-2]["content"], msgs[:-2]
        assert meta["person"] in question
        assert not any(_contains(question, v) for v in ALL_VALUES)  # no value, let alone the answer, is asked
        stated = [msgs[t]["content"] for t in meta["evidence_turns"]]
        assert stated and all(
            meta["person"] in s and msgs[t]["role"] == "user" for s, t in zip(stated, meta["evidence_turns"])
        )
        assert _contains(stated[-1], meta["answer"])  # the last statement of the fact carries the current value
        # values occur only in fact statements (user turns naming a fact's person), never in filler
        people = {f["person"] for f in meta["facts"]}
        for m in history:
            if any(_contains(m["content"], v) for v in ALL_VALUES):
                assert m["role"] == "user" and any(p in m["content"] for p in people), m


def test_synthetic_updates() -> None:
    records = list(SyntheticChats(num_episodes=60, seed=2, update_prob=1.0, sessions=(2, 4)))
    for record in records:
        meta, history = record["meta"], record["messages"][:-2]
        assert meta["was_updated"] and meta["stale_value"] not in (None, meta["answer"])
        stale_at = [
            i
            for i, m in enumerate(history)
            if _contains(m["content"], meta["stale_value"]) and meta["person"] in m["content"]
        ]
        new_at = [
            i
            for i, m in enumerate(history)
            if _contains(m["content"], meta["answer"]) and meta["person"] in m["content"]
        ]
        assert stale_at and new_at and max(stale_at) < min(new_at)
        assert meta["evidence_turns"] == sorted(stale_at[:1] + new_at[-1:])
    assert not any(r["meta"]["was_updated"] for r in SyntheticChats(num_episodes=30, update_prob=0.0))
    assert not any(r["meta"]["was_updated"] for r in SyntheticChats(num_episodes=30, update_prob=1.0, sessions=(1, 1)))
    rate = sum(r["meta"]["was_updated"] for r in SyntheticChats(num_episodes=400, sessions=(2, 2), update_prob=0.3))
    assert 80 <= rate <= 160


def test_synthetic_custom_vocabulary_and_hydra() -> None:
    cfg = OmegaConf.create(
        {
            "_target_": "deltamem.train_data.SyntheticChats",
            "num_episodes": 4,
            "seed": 5,
            "sessions": [1, 2],
            "facts": 3,
            "people": ["Ann", "Ben"],
            "attributes": {"instrument": ["piano", "violin", "drums"], "city": ["Rome", "Quito"]},
        }
    )
    source = instantiate(cfg)
    assert len(source) == 4
    for record in source:
        _check_shape(record)
        assert record["answer"] in {"piano", "violin", "drums", "Rome", "Quito"}
        assert record["meta"]["person"] in {"Ann", "Ben"}
        if record["meta"]["attribute"] == "instrument":
            assert record["messages"][-2]["content"] == f"What is {record['meta']['person']}'s instrument now?"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_episodes": 0}, "num_episodes"),
        ({"facts": 16 * 6 + 1}, "facts"),
        ({"facts": 0}, "facts"),
        ({"sessions": (3, 2)}, "sessions"),
        ({"sessions": (0, 2)}, "sessions"),
        ({"sessions": (1, 2, 3)}, "sessions"),
        ({"attributes": {"city": ["Paris"]}}, "attributes"),
        ({"attributes": {"city": ["Paris", "paris"]}}, "attributes"),
        ({"attributes": {}}, "attributes"),
        ({"people": []}, "people"),
        ({"people": ["Ann", "Ann"]}, "people"),
        ({"people": ["Ann", "Paris"]}, "attributes"),  # a name that is also a value would leak into the question
        ({"distractor_turns": -1}, "distractor_turns"),
        ({"update_prob": 1.5}, "update_prob"),
        ({"split": ""}, "split"),
        ({"fact_speaker": "narrator"}, "fact_speaker"),
    ],
)
def test_synthetic_argument_errors(kwargs: dict, name: str) -> None:
    args = {"num_episodes": 3, **kwargs}
    with pytest.raises(ValueError, match=name) as info:
        SyntheticChats(**args)
    assert "\n" not in str(info.value)


def test_assistant_stated_facts_end_their_exchange() -> None:
    """fact_speaker="assistant": the user asks for news and the assistant states the fact; no user
    turn ever holds a value, and the last evidence turn states the current answer."""
    kwargs = {"num_episodes": 20, "sessions": (1, 2), "facts": 2, "distractor_turns": 1, "update_prob": 0.5}
    for record in SyntheticChats(fact_speaker="assistant", **kwargs):
        messages, meta = record["messages"], record["meta"]
        assert [m["role"] for m in messages[-2:]] == ["user", "assistant"]
        assert all(messages[turn]["role"] == "assistant" for turn in meta["evidence_turns"])
        assert _contains(messages[meta["evidence_turns"][-1]]["content"], record["answer"])
        users = [m["content"] for m in messages if m["role"] == "user"]
        assert not any(_contains(text, f["value"]) for text in users for f in meta["facts"])
        assert not any(_contains(text, f["stale_value"]) for text in users for f in meta["facts"] if f["stale_value"])


def test_synthetic_index_errors() -> None:
    with pytest.raises(IndexError):
        SyntheticChats(num_episodes=3)[3]


def test_score() -> None:
    record = {"answer": "Tokyo"}
    assert score("Tokyo", record) == 1.0
    assert score("  \n tokyo.\n", record) == 1.0
    assert score("I believe it's TOKYO, since the move!", record) == 1.0
    assert score("Kyoto", record) == 0.0
    assert score("Tokyos", record) == 0.0
    assert score("Paris\nno wait, Tokyo", record) == 0.0  # only the first line counts
    assert score("", record) == 0.0
    assert score("She eats ice-cream daily", {"answer": "ice cream"}) == 1.0
    sample = SyntheticChats(num_episodes=1)[0]
    assert SyntheticChats.score(sample["answer"], sample) == 1.0


# ----------------------------------------------------------------------------------------- qasper
def _papers() -> list[dict]:
    return json.loads(FIXTURE.read_text())


def test_qasper_episodes_and_answer_rules() -> None:
    source = QasperRawEpisodes(source=str(FIXTURE))
    got = {r["id"]: (r["answer"], r["meta"]["answer_type"]) for r in source}
    assert got == {
        "9001.00001:qa-a1": ("About 1.2 million tokens across four dialects", "free_form"),  # free form over spans
        "9001.00001:qa-a2": ("byte-pair encoding, unigram language model", "extractive"),
        "9001.00001:qa-a3": ("Yes", "yes_no"),
        "9001.00001:qa-a5": ("No", "yes_no"),  # first annotator unanswerable, the second answers
        "9001.00002:qa-b1": ("22 kHz", "extractive"),
        "9001.00002:qa-b2": ("No", "yes_no"),
    }  # qa-a4 and qa-b3 are unanswerable: skipped
    assert len(source) == 6 and source[-1] == source[5]
    assert source[3]["meta"]["annotation_id"] == "ann-qa-a5-1"


def test_qasper_history_holds_the_paper() -> None:
    papers = {p["id"]: p for p in _papers()}
    for record in QasperRawEpisodes(source=str(FIXTURE), paragraphs_per_message=3):
        _check_shape(record)
        paper, msgs = papers[record["meta"]["paper_id"]], record["messages"]
        qas = paper["qas"]
        assert msgs[-2]["content"] == qas["question"][qas["question_id"].index(record["meta"]["question_id"])]
        assert paper["title"] in msgs[1]["content"] and paper["abstract"] in msgs[1]["content"]
        text = "\n".join(m["content"] for m in msgs[:-2])
        paragraphs = [t for sec in paper["full_text"]["paragraphs"] for t in sec if t]
        assert all(t in text for t in paragraphs)
        assert all(m["content"].count("\n\n") <= 2 for m in msgs[3:-2:2])  # <= 3 paragraphs per message
        assert len(msgs) == 1 + 2 * record["meta"]["chunks"] + 2  # system, (chunk, ack) per chunk, question, answer
        assert record["meta"]["chunks"] == 1 + -(-len(paragraphs) // 3)
        assert record["meta"]["history_chars"] == sum(len(m["content"]) for m in msgs[:-2])
        assert record["meta"]["evidence_in_history"]


def test_qasper_history_is_never_cut_by_characters(tmp_path: Path) -> None:
    """The whole paper is the history (the episode builder tail-truncates by tokens); no character budget."""
    papers = _papers()
    long = "word " * 20000  # 100,000 characters in one paragraph: kept whole
    papers[0]["full_text"]["paragraphs"][0][0] = long.strip()
    path = tmp_path / "long.json"
    path.write_text(json.dumps(papers))
    record = QasperRawEpisodes(source=str(path))[0]
    assert record["messages"][3]["content"].startswith("## Introduction\n" + long.strip())
    assert record["meta"]["history_chars"] > 100_000
    with pytest.raises(TypeError, match="max_write_chars"):
        QasperRawEpisodes(source=str(path), max_write_chars=24000)


def test_qasper_missing_field(tmp_path: Path) -> None:
    for drop, field in [
        (("full_text",), "full_text.section_name"),
        (("qas", "question_id"), "qas.question_id"),
        (("title",), "title"),
    ]:
        papers = _papers()
        node = papers[1]
        for key in drop[:-1]:
            node = node[key]
        del node[drop[-1]]
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(papers))
        source = QasperRawEpisodes(source=str(path))  # cheap: nothing read yet
        with pytest.raises(ValueError) as info:
            len(source)
        assert str(info.value) == f"{path}: paper 1 (id '9001.00002') is missing field '{field}'"


def test_qasper_local_sources_and_arguments(tmp_path: Path) -> None:
    QasperRawEpisodes(source="/no/such/file.json")  # construction never touches the data
    with pytest.raises(FileNotFoundError, match="file.json"):
        len(QasperRawEpisodes(source="/no/such/file.json"))
    scalar = tmp_path / "scalar.json"
    scalar.write_text("3")
    with pytest.raises(ValueError) as info:
        len(QasperRawEpisodes(source=str(scalar)))
    assert str(info.value) == f"{scalar}: expected a dict keyed by paper id (raw) or a list of HF rows, got int"
    with pytest.raises(ValueError, match="paragraphs_per_message"):
        QasperRawEpisodes(paragraphs_per_message=0)
    assert len(QasperRawEpisodes(source=str(FIXTURE), system_prompt="")) == 6
    assert QasperRawEpisodes(source=str(FIXTURE), system_prompt="")[0]["messages"][0]["role"] == "user"


# ----------------------------------------------------------------------------------------- jsonl
def _write(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_jsonl_good_file(tmp_path: Path) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I keep bees."},
        {"role": "assistant", "content": "Nice!"},
        {"role": "user", "content": "What do I keep?"},
        {"role": "assistant", "content": "Bees."},
    ]
    path = _write(
        tmp_path,
        [
            json.dumps({"messages": chat, "id": "ep-1", "meta": {"topic": "bees"}}),
            "",
            "   ",
            json.dumps({"messages": chat[3:]}),
        ],
    )
    source = JsonlChats(path=path)
    records = list(source)
    assert len(source) == 2 and [r["id"] for r in records] == ["ep-1", "chats:4"]
    for record in records:
        _check_shape(record)
        assert record["answer"] == "Bees." and record["meta"]["source"] == path
    assert records[0]["meta"] == {"topic": "bees", "source": path, "line": 1} and records[1]["meta"]["line"] == 4
    records[0]["messages"].clear()
    assert len(source[0]["messages"]) == 5  # callers get copies


GOOD = {"role": "user", "content": "q"}
ANSWER = {"role": "assistant", "content": "a"}


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("{not json", "bad JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"id": "x"}), 'missing "messages"'),
        (json.dumps({"messages": "hi"}), "must be a list"),
        (json.dumps({"messages": [ANSWER]}), "fewer than 2 messages"),
        (json.dumps({"messages": [{"role": "user"}, ANSWER]}), 'message 1 needs both "role" and "content"'),
        (json.dumps({"messages": [GOOD, {"content": "a"}]}), "message 2 needs both"),
        (json.dumps({"messages": [{"role": "tool", "content": "x"}, GOOD, ANSWER]}), "unknown role 'tool'"),
        (
            json.dumps({"messages": [GOOD, {"role": "user", "content": "again"}]}),
            "last message must be from the assistant",
        ),
        (json.dumps({"messages": [ANSWER, ANSWER]}), "before the answer must be from the user"),
        (json.dumps({"messages": [GOOD, {"role": "assistant", "content": 3}]}), "content must be a string"),
        (json.dumps({"messages": [GOOD, ANSWER], "meta": None}), '"meta" must be an object, got NoneType'),
        (json.dumps({"messages": [GOOD, ANSWER], "id": [1]}), '"id" must be a string or an integer, got list'),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, bad: str, problem: str) -> None:
    path = _write(tmp_path, [json.dumps({"messages": [GOOD, ANSWER]}), "", bad])
    source = JsonlChats(path=path)  # cheap: nothing read yet
    with pytest.raises(ValueError) as info:
        len(source)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ") and problem in message and "\n" not in message


def test_jsonl_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        len(JsonlChats(path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(ValueError, match="no episodes"):
        len(JsonlChats(path=_write(tmp_path, ["", " "])))
