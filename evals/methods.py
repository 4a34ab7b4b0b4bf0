"""The memory-method interface: what δ-mem and every baseline expose to the evaluation runner.

A method sees a context's history through `memorize`, then answers batches of questions through
`answer`; `reset` forgets everything. The runner's *condition* decides which history a method is
given and what stays in each prompt (DESIGN.md), so the runner never branches on method names:

* `no_context`, `full_context` — nothing is memorised; the prompt holds no / all of the history.
* `memory_only`, `recent_window` — the whole history is memorised; the prompt holds no / the most
  recent part of the history.

Every answer starts from the memory as it was after `memorize`: nothing one question does (KV
cache, δ-mem writes, sampled tokens) reaches another question or another context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from evals.types import Generation

MEMORY_CONDITIONS = ("memory_only", "recent_window")  # conditions under which `memorize` is called
ALL_CONDITIONS = ("no_context", "full_context", "memory_only", "recent_window")


@dataclass
class History:
    """A context's history as the method may memorise it."""

    context_id: str
    messages: list[dict[str, str]]  # chat messages (role/content), oldest first

    @property
    def text(self) -> str:
        return "\n\n".join(m["content"] for m in self.messages)


@dataclass
class Query:
    """One question to answer: the prompt the condition prescribes and its decoding settings."""

    id: str
    messages: list[dict[str, str]]  # chat prompt (system/user), ends with the user's question
    question: str  # the bare question (what retrieval-style methods search with)
    generation: Generation


@dataclass
class Answer:
    text: str
    prompt_tokens: int  # tokens the backbone read for this question (after any truncation)
    output_tokens: int  # tokens generated (up to and excluding the end-of-turn token)
    truncated_tokens: int = 0  # prompt tokens dropped to fit the context window
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific records (e.g. retrieved ids)


@runtime_checkable
class MemoryMethod(Protocol):
    """What the runner needs from a method. `conditions` lists the conditions it can run."""

    name: str
    conditions: tuple[str, ...]

    def memorize(self, history: History) -> None:
        """Build memory from `history` (replacing whatever was memorised before)."""
        ...

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        """Answer each query against the current memory; one answer per query, in order."""
        ...

    def reset(self) -> None:
        """Forget everything memorised."""
        ...

    def cost(self) -> dict[str, Any]:
        """Static costs recorded with every result, e.g. {"extra_trainable_params": 4866336}."""
        ...
