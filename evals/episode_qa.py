"""Training episodes as a benchmark: the dev split of a `train_data` source, scored by token F1 / EM.

This is where every tuning decision of a training recipe is made (learning rate, steps, variant,
data mix), so no evaluation benchmark (LoCoMo, HotpotQA) is ever used for tuning. Each dev
episode is one context (its history) with one item (its question); the prompt under each
condition is what training's read pass sees, with the history added where the condition shows it:

* `no_context` / `memory_only`: [system] + question (the read pass exactly);
* `full_context`: [system] + history + question;
* `recent_window`: [system] + the last `recent_window_messages` history messages + question.

The source is given either as a built source object or as its Hydra config (a mapping with
`_target_`), in which case every `split` in it (a blend's children included) is set to `split`,
so `source: ${train_data}` in YAML scores the same data mix on its dev documents. Scores use the
SQuAD normalisation (lowercase, no punctuation or articles) on the output's first line.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from evals.benchmark_base import ChatHistoryBenchmark
from evals.text_metrics import exact_match, first_nonempty_line, normalize_answer, token_f1, weighted_means
from evals.types import BenchmarkDataError, Context, Generation, Item, sessions_starting_at


def with_split(config: Any, split: str) -> Any:
    """A copy of a source's Hydra config with every `split` key set to `split` (nested sources too)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    node = OmegaConf.create(config if isinstance(config, DictConfig) else dict(config))
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))

    def visit(value: Any) -> None:
        if isinstance(value, DictConfig):
            if "_target_" in value and "split" in value:
                value["split"] = split
            for key in value:
                visit(value[key])
        elif isinstance(value, ListConfig):
            for item in value:
                visit(item)

    visit(node)
    return node


class EpisodeQA(ChatHistoryBenchmark):
    """The dev (or any) split of a training source as a benchmark (see the module docstring)."""

    name = "episode_qa"

    def __init__(
        self,
        source: Any,
        split: str = "dev",
        limit: int | None = None,
        max_new_tokens: int = 32,
        recent_window_messages: int = 2,
        name: str | None = None,
    ) -> None:
        self.split = str(split)
        self.source = source
        self.limit = None if limit is None else int(limit)
        self.max_new_tokens = int(max_new_tokens)
        self.recent_window_messages = int(recent_window_messages)
        self.protocol = "squad_f1"
        if name:
            self.name = name

    def _records(self) -> Sequence[Mapping[str, Any]]:
        source = self.source
        if isinstance(source, Mapping) or type(source).__name__ == "DictConfig":
            from hydra.utils import instantiate

            source = instantiate(with_split(source, self.split))
        return source

    def load(self) -> tuple[list[Context], list[Item]]:
        contexts: list[Context] = []
        items: list[Item] = []
        seen: set[str] = set()
        for index, record in enumerate(self._records()):
            where = f"episode {index} ({record.get('id', '?')})"
            messages = record.get("messages")
            if not isinstance(messages, list) or len(messages) < 2:
                raise BenchmarkDataError(f"{where}: field 'messages' must hold a question and an answer")
            episode_id = str(record.get("id", index))
            meta = dict(record.get("meta") or {})
            question_id = str(meta.get("question_id", episode_id))
            if question_id in seen:  # a blend's repeated draws of one question: score it once
                continue
            seen.add(question_id)
            system = [dict(m) for m in messages[:1] if m["role"] == "system"]
            history = [dict(m) for m in messages[len(system) : -2]]
            question, answer = messages[-2], messages[-1]
            if question["role"] != "user" or answer["role"] != "assistant":
                raise BenchmarkDataError(f"{where}: must end with a user question and the assistant's answer")
            sessions = sessions_starting_at(meta.get("session_starts") or [], offset=len(system))  # synthetic chats
            contexts.append(Context(episode_id, messages=history, meta={"system": system}, sessions=sessions))
            category = str(meta.get("source", "all"))
            items.append(Item(episode_id, question["content"], [answer["content"]], episode_id, category, meta))
            if self.limit is not None and len(items) >= self.limit:
                break
        return contexts, items

    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        self.prompt_layout(condition)
        if context is None:
            raise ValueError(f"episode {item.id} has no context")
        shown = self.shown_history(condition, item, context) or []
        return [*context.meta["system"], *shown, {"role": "user", "content": item.question}]

    def generation(self, item: Item) -> Generation:
        return Generation(max_new_tokens=self.max_new_tokens)

    def score(self, output: str, item: Item) -> dict[str, float]:
        line = first_nonempty_line(output)
        gold = item.answers[0] if item.answers else ""
        return {
            "f1": token_f1(normalize_answer(line).split(), normalize_answer(gold).split()),
            "em": exact_match(line, gold),
        }

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        means = weighted_means(rows, ("f1", "em"))
        return {"overall": means["f1"], **means, "protocol": self.protocol}
