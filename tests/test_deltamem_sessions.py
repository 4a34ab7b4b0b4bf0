"""method=deltamem_sessions (evals/deltamem_sessions.py): a conversation fed one session at a time
through saved and reloaded memory sessions equals `method=deltamem method.write_chunks=messages`,
the same conversation written in one process, state for state and answer for answer."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from deltamem.backbones import load_backbone
from evals.deltamem_method import DeltaMemMethod, message_spans
from evals.deltamem_sessions import DeltaMemSessionsMethod
from evals.methods import History, Query
from evals.types import Generation

from conftest import compose_config, tiny_adapter

SESSIONS = [
    "DATE: 1 May\nCONVERSATION:\nalice said, \"I moved to paris\"\nbob said, \"nice city\"",
    "DATE: 9 May\nCONVERSATION:\nbob said, \"my dog is called rupert\"",
    "DATE: 2 June\nCONVERSATION:\nalice said, \"I work as a pilot now, and I like soup and bread and tea\"",
    "DATE: 5 June\nCONVERSATION:\nbob said, \"we went to oslo\"",
]


def history(context: str, sessions=SESSIONS) -> History:
    return History(context, [{"role": "user", "content": s} for s in sessions])


def queries(context: str) -> list[Query]:
    asks = ["where does alice live", "what is the dog called", "what is the job of alice"]
    return [Query(f"{context}-{k}", [{"role": "user", "content": q}], q, Generation(max_new_tokens=5),
                  context_id=context) for k, q in enumerate(asks)]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return tiny_adapter(tmp_path_factory.mktemp("sessions") / "adapter")


def method(cls, adapter, **kwargs):
    loaded = load_backbone(instantiate(compose_config("backbone=tiny").backbone))  # its own copy per method
    return cls(loaded, adapter=str(adapter), write_chunk_size=24, **kwargs)


def same_state(a, b) -> bool:
    return all(torch.equal(a.layers[i], b.layers[i]) for i in a.layers)


def test_session_by_session_equals_the_continuous_message_aligned_write(adapter, tmp_path):
    continuous = method(DeltaMemMethod, adapter, write_chunks="messages")
    sessions = method(DeltaMemSessionsMethod, adapter, store=str(tmp_path))
    cut_anywhere = method(DeltaMemMethod, adapter)  # write_chunks=tokens: calls straddle sessions
    for m in (continuous, sessions, cut_anywhere):
        m.memorize(history("conv-1"))
    assert sessions.session_writes == len(SESSIONS)
    assert len(list((tmp_path / "states").glob("*.safetensors"))) == 1  # saved after every session
    assert same_state(continuous.backend.base_state, sessions.backend.base_state)
    assert not same_state(continuous.backend.base_state, cut_anywhere.backend.base_state)
    a, b = continuous.answer(queries("conv-1")), sessions.answer(queries("conv-1"))
    assert [x.text for x in a] == [x.text for x in b] and all(x.output_tokens > 0 for x in a)


def test_several_conversations_at_once_keep_their_own_states(adapter, tmp_path):
    continuous = method(DeltaMemMethod, adapter, write_chunks="messages")
    sessions = method(DeltaMemSessionsMethod, adapter, store=str(tmp_path))
    histories = [history("conv-1"), history("conv-2", SESSIONS[::-1][:3])]
    continuous.memorize_many(histories)
    sessions.memorize_many(histories)
    asked = queries("conv-1") + queries("conv-2")
    assert [x.text for x in continuous.answer(asked)] == [x.text for x in sessions.answer(asked)]
    rows = sessions.backend.base_rows
    one = method(DeltaMemSessionsMethod, adapter, store=str(tmp_path / "alone"))
    one.memorize(histories[1])
    assert same_state(sessions.backend.base_state.select([rows["conv-2"]]), one.backend.base_state)


def test_message_spans_cover_every_token_once():
    assert message_spans([0, 0, 0, 1, 1, 2]) == [slice(0, 3), slice(3, 5), slice(5, 6)]
    assert message_spans([]) == []


def test_sessions_refuse_token_chunks(adapter, tmp_path):
    loaded = load_backbone(instantiate(compose_config("backbone=tiny").backbone))
    with pytest.raises(ValueError, match="write_chunks must be messages"):
        DeltaMemSessionsMethod(loaded, store=str(tmp_path), adapter=str(adapter), write_chunks="tokens")
