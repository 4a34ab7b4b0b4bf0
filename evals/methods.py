"""The memory-method interface: what δ-mem and every baseline expose to the evaluation runner.

A method sees a context's history through `memorize`, then answers batches of questions through
`answer`; `reset` forgets everything. The runner's *condition* decides which history a method is
given and what stays in each prompt (DESIGN.md, defined once in `evals.conditions`), so the runner
never branches on method names:

* `no_context`, `full_context` — nothing is memorised; the prompt holds no / all of the history.
* `memory_only`, `recent_window` — the whole history is memorised; the prompt holds no / the most
  recent part of the history.
* `memory_only_wrong_history` — the control of `memory_only`: the same prompt, but the method has
  memorised *another* context's history (the runner picks it: the next context in the benchmark's
  order, cyclically). A memory that carries the right context beats it; one that only learned
  the answer format does not.

Every answer starts from the memory as it was after `memorize`: nothing one question does (KV
cache, δ-mem writes, sampled tokens) reaches another question or another context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from evals.conditions import ALL_CONDITIONS, prompt_condition
from evals.types import Generation, Passage, Session


def supports(method: "MemoryMethod", condition: str) -> bool:
    """Whether `method` can run `condition`: a control runs wherever the condition it controls runs."""
    return condition in method.conditions or prompt_condition(condition) in method.conditions


@dataclass
class History:
    """A context's history as the method may memorise it, with its structure where the benchmark has one."""

    context_id: str
    messages: list[dict[str, str]]  # chat messages (role/content), oldest first
    sessions: Sequence[Session] = ()  # `Context.sessions`: dated sessions and turns of the messages (LoCoMo)
    passages: Sequence[Passage] = ()  # `Context.passages`: the documents in the messages (HotpotQA)

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
    context_id: str | None = None  # whose memory answers it (methods that memorise several contexts at once)


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

    # Optional: `memorize_many(histories)` keeps one memory per history (keyed by `History.context_id`)
    # and answers each query from the memory of its `Query.context_id`, so the runner can pack many
    # small contexts (HotpotQA: one question each) into one batched call. Methods without it get one
    # `memorize` per context.

    def cost(self) -> dict[str, Any]:
        """Static costs recorded with every result, e.g. {"extra_trainable_params": 4866336}."""
        ...


__all__ = ["ALL_CONDITIONS", "Answer", "History", "MemoryMethod", "Query", "supports"]
