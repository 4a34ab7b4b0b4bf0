"""A history carries its structure: LoCoMo's loader gives dated sessions and turns with ids and spans,
the runner hands them to `memorize`, and the textual baselines read them instead of parsing text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baselines.bm25_rag import chunk_history
from baselines.memorybank import split_sessions
from evals import locomo_render as render
from evals.locomo import LoCoMo
from evals.methods import Answer, History
from evals.runner import EvalRunner
from evals.types import Session, Turn

SAMPLE = {
    "sample_id": "conv-s",
    "conversation": {
        "speaker_a": "Ann",
        "speaker_b": "Bo",
        "session_1_date_time": "1 May 2023",
        "session_1": [
            {"speaker": "Ann", "dia_id": "D1:1", "text": 'I got a kitten.\nBo said, "no way"'},
            {"speaker": "Bo", "dia_id": "D1:2", "text": "Nice!", "blip_caption": "a photo of a cat"},
        ],
        "session_2_date_time": "9 May 2023",
        "session_2": [{"speaker": "Bo", "dia_id": "D2:1", "text": "How is the kitten?"}],
    },
    "qa": [{"question": "What did Ann get?", "answer": "a kitten", "evidence": ["D1:1"], "category": 4}],
}


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([SAMPLE, {**SAMPLE, "sample_id": "conv-t"}]))
    return str(path)


@pytest.mark.parametrize("protocol", ["paper", "paper_v0", "official"])
def test_locomo_sessions_carry_dates_turn_ids_and_spans(source, protocol):
    bench = LoCoMo(source, protocol=protocol)
    context = bench.load()[0][0]
    assert [(s.number, s.message, s.date) for s in context.sessions] == [(1, 0, "1 May 2023"), (2, 1, "9 May 2023")]
    first = context.sessions[0].turns
    assert [(t.speaker, t.turn_id, t.caption) for t in first] == [
        ("Ann", "D1:1", ""),
        ("Bo", "D1:2", "a photo of a cat"),
    ]
    for session, message, raw in zip(context.sessions, context.messages, context.meta["sessions"]):
        for turn, given in zip(session.turns, raw["turns"]):
            assert message["content"][slice(*turn.span)] == render.render_turn(bench.templates, given, "memory_turn")


def test_baselines_read_the_structure_not_the_rendered_text(source):
    context = LoCoMo(source).load()[0][0]
    structured = chunk_history(context.messages, "turn", sessions=context.sessions)
    # a turn whose text holds a line like another turn's opening stays one turn
    assert [c.dia_ids for c in structured] == [["D1:1"], ["D1:2"], ["D2:1"]]
    assert structured[0].text == 'DATE: 1 May 2023\nAnn said, "I got a kitten.\nBo said, "no way""'
    assert structured[0].body == structured[0].text.split("\n", 1)[1]
    bare = chunk_history(context.messages, "turn")  # no structure: whole messages, no dialog ids
    assert [c.dia_ids for c in bare] == [[], []] and bare[0].text == context.messages[0]["content"]
    assert split_sessions(context.messages, 1, context.sessions) == [[0], [1]]
    three = [*context.messages, {"role": "user", "content": "x"}]
    assert split_sessions(three, 10, context.sessions) == [[0], [1, 2]]
    synthetic = [Session(1, 0, "", (Turn("user", "a"),))]
    assert split_sessions(three, 10, synthetic) == [[0, 1, 2]]


class Recording:
    """Records what `memorize` receives."""

    name, conditions = "recording", ("memory_only", "memory_only_wrong_history")

    def __init__(self):
        self.histories: list[History] = []

    def memorize(self, history: History) -> None:
        self.histories.append(history)

    def answer(self, queries):
        return [Answer("a kitten", 1, 1) for _ in queries]

    def reset(self) -> None:
        pass

    def cost(self):
        return {}


def test_the_runner_hands_each_history_its_own_structure(source, tmp_path):
    bench, method = LoCoMo(source), Recording()
    contexts = {c.id: c for c in bench.load()[0]}
    EvalRunner(bench, method, ["memory_only", "memory_only_wrong_history"], tmp_path / "run", progress=False).run()
    assert [h.context_id for h in method.histories] == ["conv-s", "conv-t", "conv-s", "conv-t"]
    for history in method.histories:
        assert list(history.sessions) == contexts[history.context_id].sessions and history.sessions
