"""The evaluation conditions, defined once: what each shows in the prompt and what it memorises.

| condition | prompt shows | method memorises |
|---|---|---|
| `no_context` | no history | nothing |
| `full_context` | all of the history | nothing |
| `memory_only` | no history | the context's history |
| `recent_window` | the most recent part (the benchmark's window) | the context's history |
| `memory_only_wrong_history` | as `memory_only` | *another* context's history (a control) |

A control prompts exactly as the condition it controls (`prompt_as`); only the memorised history
differs. The runner decides which context's history is memorised (the wrong-history pairing);
benchmarks decide how a history is shown (`evals.benchmark_base.BenchmarkBase`).
"""

from __future__ import annotations

from dataclasses import dataclass

NONE, ALL, RECENT = "none", "all", "recent"  # what a prompt shows
OWN, OTHER = "own", "other"  # whose history is memorised (NONE: no history)


@dataclass(frozen=True)
class Condition:
    """One evaluation condition.

    Attributes:
        name: the name configs, predictions and results use.
        shows: the history in the prompt: `none`, `all`, or `recent` (the benchmark's recent window).
        memorizes: the history the method memorises: `none`, `own` (the context's) or `other`.
        prompt_as: a control's prompt layout: the name of the condition it controls ("" for itself).
    """

    name: str
    shows: str
    memorizes: str
    prompt_as: str = ""

    def __post_init__(self) -> None:
        if self.shows not in (NONE, ALL, RECENT) or self.memorizes not in (NONE, OWN, OTHER):
            raise ValueError(f"condition {self.name}: shows={self.shows!r}, memorizes={self.memorizes!r}")

    @property
    def shows_history(self) -> bool:
        return self.shows != NONE

    @property
    def shows_recent(self) -> bool:
        return self.shows == RECENT

    @property
    def memorizes_history(self) -> bool:
        """Whether the runner calls `memorize` before the questions."""
        return self.memorizes != NONE

    @property
    def memorizes_other(self) -> bool:
        """Whether the memorised history is another context's (the wrong-history control)."""
        return self.memorizes == OTHER

    @property
    def prompt_name(self) -> str:
        """The condition whose prompt this one renders (itself, unless it is a control)."""
        return self.prompt_as or self.name


NO_CONTEXT = Condition("no_context", shows=NONE, memorizes=NONE)
FULL_CONTEXT = Condition("full_context", shows=ALL, memorizes=NONE)
MEMORY_ONLY = Condition("memory_only", shows=NONE, memorizes=OWN)
RECENT_WINDOW = Condition("recent_window", shows=RECENT, memorizes=OWN)
WRONG_HISTORY = Condition("memory_only_wrong_history", shows=NONE, memorizes=OTHER, prompt_as=MEMORY_ONLY.name)

CONDITIONS: dict[str, Condition] = {
    c.name: c for c in (NO_CONTEXT, FULL_CONTEXT, MEMORY_ONLY, RECENT_WINDOW, WRONG_HISTORY)
}
ALL_CONDITIONS: tuple[str, ...] = tuple(CONDITIONS)
MEMORY_CONDITIONS: tuple[str, ...] = tuple(n for n, c in CONDITIONS.items() if c.memorizes_history)
# what a benchmark renders prompts for (a control renders the one it controls), in table order
PROMPT_CONDITIONS: tuple[str, ...] = tuple(c.name for c in (FULL_CONTEXT, NO_CONTEXT, MEMORY_ONLY, RECENT_WINDOW))
MEMORY_PROMPTS: tuple[str, ...] = (MEMORY_ONLY.name, RECENT_WINDOW.name)  # what a memory method answers under


def condition_named(name: str) -> Condition:
    """The condition called `name` (any of `ALL_CONDITIONS`)."""
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; expected one of {ALL_CONDITIONS}")
    return CONDITIONS[name]


def prompt_condition(condition: str) -> str:
    """The condition whose prompt layout `condition` uses (itself, unless it is a control)."""
    found = CONDITIONS.get(condition)
    return condition if found is None else found.prompt_name


__all__ = [
    "Condition",
    "CONDITIONS",
    "ALL_CONDITIONS",
    "MEMORY_CONDITIONS",
    "PROMPT_CONDITIONS",
    "MEMORY_PROMPTS",
    "NO_CONTEXT",
    "FULL_CONTEXT",
    "MEMORY_ONLY",
    "RECENT_WINDOW",
    "WRONG_HISTORY",
    "condition_named",
    "prompt_condition",
]
