"""The synthetic people-facts chats (`deltamem.train_data.SyntheticChats`) as a benchmark.

Each held-out chat is one context (its history) with one question: the final user turn. The gold
answer is the fact's current value; the score is whether it appears as a word of the output's first
line (`deltamem.train_data.synthetic.score`). The held-out split's seeds are disjoint from the
training split's, so a memory trained on `train` never saw these chats.
"""

from __future__ import annotations

from typing import Any, Sequence

from deltamem.train_data.synthetic import SyntheticChats, score
from evals.benchmark_base import ChatHistoryBenchmark
from evals.text_metrics import weighted_means
from evals.types import Context, Generation, Item, sessions_starting_at


class SyntheticBenchmark(ChatHistoryBenchmark):
    """Held-out synthetic chats; `recent_window_messages` history messages stay in the prompt under recent_window."""

    name = "synthetic"

    def __init__(
        self,
        num_episodes: int = 64,
        seed: int = 0,
        split: str = "heldout",
        max_new_tokens: int = 8,
        recent_window_messages: int = 2,
        **generator: Any,  # sessions, facts, distractor_turns, update_prob, ... of SyntheticChats
    ):
        self.chats = SyntheticChats(num_episodes=num_episodes, seed=seed, split=split, **generator)
        self.max_new_tokens = int(max_new_tokens)
        self.recent_window_messages = int(recent_window_messages)
        self.protocol = "synthetic"

    def load(self) -> tuple[list[Context], list[Item]]:
        contexts, items = [], []
        for index in range(len(self.chats)):
            record = self.chats[index]
            messages = record["messages"]
            system = [m for m in messages[:1] if m["role"] == "system"]
            history = messages[len(system) : -2]
            meta = {"system": system, "was_updated": record["meta"]["was_updated"]}
            sessions = sessions_starting_at(record["meta"]["session_starts"], offset=len(system))
            contexts.append(Context(record["id"], messages=history, meta=meta, sessions=sessions))
            category = "updated" if record["meta"]["was_updated"] else "stated_once"
            items.append(Item(record["id"], messages[-2]["content"], [record["answer"]], record["id"], category))
        return contexts, items

    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        self.prompt_layout(condition)
        if context is None:
            raise ValueError(f"synthetic item {item.id} has no context")
        shown = self.shown_history(condition, item, context) or []
        return [*context.meta["system"], *shown, {"role": "user", "content": item.question}]

    def generation(self, item: Item) -> Generation:
        return Generation(max_new_tokens=self.max_new_tokens)

    def score(self, output: str, item: Item) -> dict[str, float]:
        return {"accuracy": score(output, {"answer": item.answers[0]})}

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        means = weighted_means(rows, ("accuracy",))
        return {"overall": means["accuracy"], **means, "protocol": self.protocol}
