"""What every benchmark shares: the mapping condition → the history shown and the history written.

A benchmark inherits `BenchmarkBase` and keeps its own prompt rendering. It says how its history
looks in full (`full_history`) and as a recent window (`recent_history`), in its own form (chat
messages, LoCoMo sessions, numbered passages, plain text); `shown_history` picks one of them, or
none, by the condition (`evals.conditions`). `written_history` is what a method memorises under a
condition: the benchmark's `history_messages` where the condition memorises at all.
"""

from __future__ import annotations

from typing import Any

from evals.conditions import CONDITIONS, PROMPT_CONDITIONS, Condition, condition_named
from evals.types import Context, Item


class BenchmarkBase:
    """Condition handling for benchmarks. `conditions`: the condition names `prompt` accepts."""

    conditions: tuple[str, ...] = PROMPT_CONDITIONS
    context_optional = False  # True: the history hooks take a missing context (None) themselves

    def prompt_layout(self, condition: str) -> Condition:
        """The condition a prompt is rendered for; a ValueError for any this benchmark does not prompt."""
        if condition not in self.conditions:
            raise ValueError(f"unknown condition {condition!r} (expected one of {self.conditions})")
        return CONDITIONS[condition]

    def shown_history(self, condition: str, item: Item, context: Context | None) -> Any:
        """The history the prompt for `item` shows: None where the condition shows none, else the
        benchmark's `recent_history` or `full_history` (a ValueError for a missing context, unless
        `context_optional`)."""
        shown = self.prompt_layout(condition)
        if not shown.shows_history:
            return None
        if context is None and not self.context_optional:
            raise ValueError(f"condition {condition!r} needs the item's context")
        return self.recent_history(item, context) if shown.shows_recent else self.full_history(item, context)

    def full_history(self, item: Item, context: Context | None) -> Any:
        """The history as `full_context` shows it, in the benchmark's own form."""
        raise NotImplementedError(f"{type(self).__name__} shows no history")

    def recent_history(self, item: Item, context: Context | None) -> Any:
        """The history as `recent_window` shows it, in the benchmark's own form."""
        raise NotImplementedError(f"{type(self).__name__} shows no history")

    def history_messages(self, context: Context) -> list[dict[str, str]]:
        """The history as chat messages, oldest first: what a method memorises (copies)."""
        return [dict(m) for m in context.messages]

    def written_history(self, condition: str, context: Context) -> list[dict[str, str]] | None:
        """What a method memorises from `context` under `condition`; None when it memorises nothing.
        (Whose context it is, under the wrong-history control, is the runner's choice.)"""
        return self.history_messages(context) if condition_named(condition).memorizes_history else None


class ChatHistoryBenchmark(BenchmarkBase):
    """A history of chat messages: `full_context` shows all of them, `recent_window` the last
    `recent_window_messages` (none when it is 0)."""

    recent_window_messages: int = 0

    def full_history(self, item: Item, context: Context) -> list[dict[str, str]]:
        return context.messages

    def recent_history(self, item: Item, context: Context) -> list[dict[str, str]]:
        n = self.recent_window_messages
        return context.messages[-n:] if n > 0 else []


__all__ = ["BenchmarkBase", "ChatHistoryBenchmark"]
