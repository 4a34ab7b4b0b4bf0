"""One definition of the evaluation conditions, and the benchmark base that maps them to histories."""

from __future__ import annotations

import pytest

from evals.benchmark_base import BenchmarkBase, ChatHistoryBenchmark
from evals.conditions import (
    ALL_CONDITIONS,
    CONDITIONS,
    MEMORY_CONDITIONS,
    PROMPT_CONDITIONS,
    WRONG_HISTORY,
    condition_named,
    prompt_condition,
)
from evals.gpqa import GPQADiamond
from evals.hotpotqa import HotpotQA
from evals.ifeval import IFEval
from evals.locomo import LoCoMo
from evals.memory_agent_bench import MemoryAgentBench
from evals.synthetic import SyntheticBenchmark
from evals.types import Context, Item

# the lists the modules held before there was one definition
OLD_ALL = ("no_context", "full_context", "memory_only", "recent_window", "memory_only_wrong_history")
OLD_MEMORY = ("memory_only", "recent_window", "memory_only_wrong_history")
OLD_BENCHMARK = ("full_context", "no_context", "memory_only", "recent_window")
OLD_SHOWS = ("full_context", "recent_window")


def test_the_definition_reproduces_the_old_lists():
    assert ALL_CONDITIONS == OLD_ALL and MEMORY_CONDITIONS == OLD_MEMORY and PROMPT_CONDITIONS == OLD_BENCHMARK
    assert tuple(n for n in OLD_BENCHMARK if CONDITIONS[n].shows_history) == OLD_SHOWS
    assert [n for n, c in CONDITIONS.items() if c.shows_recent] == ["recent_window"]
    assert [n for n, c in CONDITIONS.items() if c.memorizes_other] == [WRONG_HISTORY.name]
    assert {n: prompt_condition(n) for n in OLD_ALL} == {**{n: n for n in OLD_ALL}, WRONG_HISTORY.name: "memory_only"}
    assert prompt_condition("unheard_of") == "unheard_of"


def test_an_unknown_condition_is_named_with_the_known_ones():
    assert condition_named("memory_only").memorizes == "own"
    with pytest.raises(ValueError, match="unknown condition 'bogus'; expected one of"):
        condition_named("bogus")


@pytest.mark.parametrize("cls", [LoCoMo, HotpotQA, MemoryAgentBench, IFEval, GPQADiamond, SyntheticBenchmark])
def test_every_benchmark_takes_its_conditions_from_the_base(cls):
    assert issubclass(cls, BenchmarkBase) and cls.conditions == PROMPT_CONDITIONS


class Chats(ChatHistoryBenchmark):
    recent_window_messages = 1


def test_the_base_maps_conditions_to_the_history_shown_and_written():
    context = Context("c", messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    item = Item("q", "?", [], "c")
    bench = Chats()
    shown = {c: bench.shown_history(c, item, context) for c in PROMPT_CONDITIONS}
    assert shown == {"full_context": context.messages, "no_context": None, "memory_only": None,
                     "recent_window": context.messages[-1:]}  # fmt: skip
    written = {c: bench.written_history(c, context) for c in ALL_CONDITIONS}
    assert written == {c: (context.messages if c in OLD_MEMORY else None) for c in ALL_CONDITIONS}
    assert written["memory_only"] is not context.messages  # copies
    with pytest.raises(ValueError, match="unknown condition 'memory_only_wrong_history'"):
        bench.shown_history(WRONG_HISTORY.name, item, context)  # the runner renders a control's layout
    with pytest.raises(ValueError, match="needs the item's context"):
        bench.shown_history("full_context", item, None)
    assert bench.shown_history("no_context", item, None) is None
