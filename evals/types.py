"""The shapes every benchmark module shares: contexts, questions, and the benchmark protocol.

A benchmark loads *contexts* (a LoCoMo conversation, a MemoryAgentBench row, a HotpotQA passage
set; empty for IFEval/GPQA) and *items* (questions pointing at their context). The runner injects
a context once and asks all of its items ("inject once, query many"), so nothing here re-encodes
a shared history per question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from deltamem.errors import UserError


class BenchmarkDataError(UserError, ValueError):
    """A data file that does not match the benchmark's upstream schema (file, record, field named)."""


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation history, as the benchmark's data gives it."""

    speaker: str
    text: str
    turn_id: str = ""  # the benchmark's id of the turn (LoCoMo's dialog id, "D3:7"); "" when it has none
    caption: str = ""  # the caption of an image shared with the turn; "" for none
    span: tuple[int, int] = (0, 0)  # [start, end) of the turn in the text of the history message holding it


@dataclass(frozen=True)
class Session:
    """One sitting of a conversation history: where it is in the history messages, its date, its turns."""

    number: int  # 1-based, oldest first
    message: int  # index of the history message it starts (LoCoMo: one message per session)
    date: str = ""
    turns: tuple[Turn, ...] = ()


@dataclass(frozen=True)
class Passage:
    """One document of a multi-document history (HotpotQA's ten passages): its number and title,
    and where its rendered block sits in a history message's text."""

    index: int  # the benchmark's number for it (HotpotQA: 1..10, the position in `context.title`)
    title: str
    message: int  # index of the history message holding its block
    span: tuple[int, int]  # [start, end) of the block in that message's text


def sessions_starting_at(starts: Sequence[int], offset: int = 0) -> list[Session]:
    """Undated sessions that start at these message indices (a generator's `session_starts`), each
    moved back by `offset` (the messages dropped in front of the history, e.g. a system prompt)."""
    return [Session(number=k + 1, message=int(start) - offset) for k, start in enumerate(starts)]


@dataclass
class Context:
    """A history the questions point at: its messages (what a method memorises), a plain-text form,
    and its structure where the loader knows it (`sessions`: LoCoMo's dated sessions and turns;
    `passages`: HotpotQA's documents), so no method has to parse the rendered text back."""

    id: str
    messages: list[dict[str, str]] = field(default_factory=list)  # a chat history (role/content)
    text: str = ""  # or a plain-text history
    meta: dict[str, Any] = field(default_factory=dict)
    sessions: list[Session] = field(default_factory=list)  # the messages' sessions, oldest first ([]: none)
    passages: list[Passage] = field(default_factory=list)  # the messages' documents, in order ([]: none)


@dataclass
class Item:
    id: str
    question: str
    answers: list[str]  # gold answer(s) / aliases; may be empty (IFEval)
    context_id: str | None = None
    category: str | None = None  # category / sub-task / source used by aggregation
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    """Decoding settings a protocol prescribes for an item."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


class Benchmark(Protocol):
    name: str

    def load(self) -> tuple[list[Context], list[Item]]: ...

    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        """The chat messages to send for `item` under `condition` (the history only where shown)."""
        ...

    def written_history(self, condition: str, context: Context) -> list[dict[str, str]] | None:
        """What a method memorises from `context` under `condition` (`evals.benchmark_base`)."""
        ...

    def generation(self, item: Item) -> Generation: ...

    def score(self, output: str, item: Item) -> dict[str, float]:
        """Post-process the raw output and score it; returns named metrics (e.g. {"f1": 0.5})."""
        ...

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Overall and per-category scores from per-item rows ({"category": ..., metrics...})."""
        ...
