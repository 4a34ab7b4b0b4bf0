"""MemoryAgentBench (AR, TTL, LRU, SF/Conflict_Resolution): loading, and its two protocols.

One context per dataset row, one item per question ("inject once, query many"). A protocol is a
prompt builder and a scorer, both configured from `conf/benchmark/memory_agent_bench.yaml`, which
holds every template, token budget and clip size with the file it comes from:
- `paper`: the δ-mem release's evaluation (PAPER_PROTOCOL.md §5; evals/mab_prompts.py `PaperPrompts`,
  evals/mab_paper.py);
- `official`: MemoryAgentBench's own harness (EVAL_PROTOCOLS.md; evals/mab_prompts.py `OfficialPrompts`,
  evals/mab_official.py).
Both decode greedily with the source's `generation_max_length`, matched on the exact source string
(4,096 for any other). A rebuilt row (evals/mab_rebuild.py) may name the hub source it is scored as
(`metadata.scored_as`). Results record the protocol; aggregates are percentages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from evals.benchmark_base import BenchmarkBase
from evals.data_files import load_hub_dataset, read_json
from evals.mab_official import OfficialScorer
from evals.mab_paper import PaperScorer
from evals.mab_prompts import OfficialPrompts, PaperPrompts
from evals.types import BenchmarkDataError, Context, Generation, Item

SPLITS = ("Accurate_Retrieval", "Test_Time_Learning", "Long_Range_Understanding", "Conflict_Resolution")
PROTOCOLS: dict[str, tuple[type, type]] = {
    "paper": (PaperPrompts, PaperScorer),
    "official": (OfficialPrompts, OfficialScorer),
}
CONFIG_FILE = Path(__file__).resolve().parents[1] / "conf" / "benchmark" / "memory_agent_bench.yaml"

# The δ-mem paper's MemoryAgentBench scores (%), Qwen3-4B-Instruct-2507 backbone; SF = Conflict_Resolution.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "frozen": {
        "overall": 29.54,
        "Accurate_Retrieval": 35.30,
        "Test_Time_Learning": 26.14,
        "Long_Range_Understanding": 47.08,
        "Conflict_Resolution": 14.37,
    },
    "msw": {"overall": 38.85},
}


_FAMILY_RULES = [(r"eventqa", "eventqa"), (r"ruler_(qa\d*)", r"ruler_\1"), (r"longmemeval", "longmemeval")]
_FAMILY_RULES += [(r"factconsolidation_(sh|mh)", r"factconsolidation_\1"), (r"icl_(.+?)_\d+shot", r"icl_\1")]
_FAMILY_RULES += [(r"recsys_(\w+?)(?:_full)?$", r"recsys_\1"), (r"infbench_sum", "infbench_sum")]
_FAMILY_RULES += [(r"detective", "detective_qa")]


def dataset_family(source: str) -> str:
    """A normalised dataset name for a metadata.source ("ruler_qa1_197K" -> "ruler_qa1")."""
    s = source.strip().lower()
    for pattern, replacement in _FAMILY_RULES:
        match = re.match(pattern, s)
        if match:
            return match.expand(replacement)
    return re.sub(r"(_(full|\d+k|\d+shot\w*|s\*?))+$", "", s) or s


def config_defaults() -> dict[str, Any]:
    """`max_new_tokens`, `paper` and `official` of the benchmark config, for instances built without them."""
    loader = OmegaConf.load(CONFIG_FILE).loader
    return {key: OmegaConf.to_container(loader[key], resolve=False) for key in ("max_new_tokens", *PROTOCOLS)}


def _field_error(origin: str, split: str, index: int, field: str, why: str = "missing") -> BenchmarkDataError:
    return BenchmarkDataError(f"{origin}: split {split!r}, row {index}: field {field!r} is {why}")


def _validate(row: Any, origin: str, split: str, index: int) -> None:
    if not isinstance(row, dict):
        raise _field_error(origin, split, index, "<row>", "not an object")
    for field, kind in (("context", str), ("questions", list), ("answers", list), ("metadata", dict)):
        if field not in row or row[field] is None:
            raise _field_error(origin, split, index, field)
        if not isinstance(row[field], kind):
            raise _field_error(origin, split, index, field, f"not a {kind.__name__}")
    if not all(isinstance(q, str) for q in row["questions"]):
        raise _field_error(origin, split, index, "questions", "not a list of strings")
    if len(row["answers"]) != len(row["questions"]):
        raise _field_error(origin, split, index, "answers", "not one alias list per question")
    for j, aliases in enumerate(row["answers"]):
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise _field_error(origin, split, index, f"answers[{j}]", "not a list of strings")
    if not isinstance(row["metadata"].get("source"), str) or not row["metadata"]["source"]:
        raise _field_error(origin, split, index, "metadata.source")


class MemoryAgentBench(BenchmarkBase):
    """MemoryAgentBench loader, the chosen protocol's prompts and scores, and per-source token budgets.

    `max_new_tokens`: `{by_source: {source: n}, default: n}`; `paper` / `official`: that protocol's
    `{source: ..., prompts: ..., scoring: ...}` settings. Left out, they are read from the benchmark config file.
    """

    name = "memory_agent_bench"
    context_optional = True  # the history hooks show an empty history without a context

    def __init__(
        self,
        source: Any = "ai-hyz/MemoryAgentBench",
        splits: Sequence[str] = SPLITS,
        protocol: str = "paper",
        limit_rows: int | None = None,
        recent_window_chars: int = 16_000,
        recsys_entities: str | None = None,
        max_new_tokens: dict[str, Any] | None = None,
        paper: dict[str, Any] | None = None,
        official: dict[str, Any] | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown MemoryAgentBench protocol {protocol!r} (expected one of {tuple(PROTOCOLS)})")
        given = {"max_new_tokens": max_new_tokens, "paper": paper, "official": official}
        defaults = config_defaults() if None in given.values() else {}
        settings = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        self.source = source if hasattr(source, "rows") else str(source)  # a hub id, a JSON file or a builder
        self.splits = tuple(splits)
        self.protocol = protocol
        self.protocol_source = str(settings[protocol]["source"])  # what results.json names this protocol's spec
        self.limit_rows = limit_rows
        self.recent_window_chars = int(recent_window_chars)
        self.budgets = {str(k): int(v) for k, v in settings["max_new_tokens"]["by_source"].items()}
        self.default_budget = int(settings["max_new_tokens"]["default"])
        prompts_class, scorer_class = PROTOCOLS[protocol]
        self.prompts = prompts_class(**settings[protocol]["prompts"])
        self.scorer = scorer_class(**settings[protocol]["scoring"], recsys_entities=recsys_entities)

    def _rows(self) -> tuple[str, dict[str, list[Any]]]:
        if hasattr(self.source, "rows"):  # rows rebuilt offline (evals/mab_rebuild.py): the same checks follow
            built = self.source.rows()
            missing = [s for s in self.splits if s not in built]
            if missing:
                raise BenchmarkDataError(f"{self.source}: builds no rows for split(s) {missing}")
            return str(self.source), {split: built[split] for split in self.splits}
        path = Path(self.source).expanduser()
        if path.exists():
            data = read_json(path)
            if not isinstance(data, dict):
                raise BenchmarkDataError(f"{path}: expected an object {{split name: [rows]}}")
            for split in self.splits:
                if not isinstance(data.get(split), list):
                    raise BenchmarkDataError(f"{path}: split {split!r} is missing or not a list of rows")
            return str(path), {split: data[split] for split in self.splits}
        rows = {s: [dict(r) for r in load_hub_dataset(self.source, "MemoryAgentBench", split=s)] for s in self.splits}
        return self.source, rows

    def load(self) -> tuple[list[Context], list[Item]]:
        """One Context per row (id "split:row"), one Item per question (category = split)."""
        origin, by_split = self._rows()
        self.rebuilt: dict[str, str] = {}
        contexts: list[Context] = []
        items: list[Item] = []
        for split, rows in by_split.items():
            for index, row in enumerate(rows[: self.limit_rows] if self.limit_rows is not None else rows):
                _validate(row, origin, split, index)
                meta = row["metadata"]
                source = meta["source"]
                family = dataset_family(source)
                context_id = f"{split}:{index}"
                if meta.get("rebuild"):  # not the hub row: the name says so wherever it is reported
                    family += "_standin" if source.endswith("_standin") else "_rebuild"
                    self.rebuilt[source] = str(meta["rebuild"])
                scored_as = str(meta.get("scored_as") or source)
                context_meta = {"split": split, "source": source, "dataset": family, "chars": len(row["context"]),
                                "scored_as": scored_as}
                text = self.prompts.context_text(row["context"])
                contexts.append(Context(id=context_id, text=text, meta=context_meta))
                pair_ids = meta.get("qa_pair_ids") or []
                types = meta.get("question_types") or []
                for j, (question, aliases) in enumerate(zip(row["questions"], row["answers"])):
                    items.append(
                        Item(
                            id=f"{context_id}:{j}",
                            question=question,
                            answers=list(aliases),
                            context_id=context_id,
                            category=split,
                            meta={
                                "source": source,
                                "dataset": family,
                                "scored_as": scored_as,
                                "qa_pair_id": pair_ids[j] if j < len(pair_ids) else None,
                                "question_type": types[j] if j < len(types) else None,
                            },
                        )
                    )
        return contexts, items

    @property
    def data_note(self) -> dict[str, Any] | None:
        """What results.json records under `data`: the rebuilt sources and how each was made."""
        rebuilt = getattr(self, "rebuilt", None)
        return {"rebuilt_sources": dict(rebuilt), "hub_rows": False} if rebuilt else None

    def fit_to(self, tokenizer: Any, window: int, template_kwargs: dict[str, Any]) -> None:
        """Let prompts depend on the backbone (the paper protocol's token clip); task=eval calls this."""
        fit = getattr(self.prompts, "fit", None)
        if fit is not None:
            fit(tokenizer, window, template_kwargs)

    def history_messages(self, context: Context) -> list[dict[str, str]]:
        """What memory methods memorise: the protocol's form of the (clipped) context."""
        return self.prompts.history_messages(context.text, context.meta["scored_as"])

    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        """The protocol's prompt; the history is shown only under full_context / recent_window."""
        history = self.shown_history(condition, item, context)
        budget = self.max_new_tokens(item.meta["scored_as"])
        return self.prompts.prompt(item.question, history, item.meta["scored_as"], budget)

    def full_history(self, item: Item, context: Context | None) -> str:
        """The (clipped) context's text; empty without a context."""
        return context.text if context is not None else ""

    def recent_history(self, item: Item, context: Context | None) -> str:
        """The last `recent_window_chars` characters of the text."""
        return self.full_history(item, context)[-self.recent_window_chars :]

    def max_new_tokens(self, source: str) -> int:
        """The source's generation budget, matched on the exact string."""
        return self.budgets.get(source, self.default_budget)

    def generation(self, item: Item) -> Generation:
        return Generation(max_new_tokens=self.max_new_tokens(item.meta["scored_as"]), do_sample=False)

    def score(self, output: str, item: Item) -> dict[str, float]:
        """The protocol's per-question metrics; `score` is the source's headline metric."""
        return self.scorer.score(output, item.answers, item.meta["scored_as"])

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The protocol's averages (%): overall, per split, per dataset; `protocol` names it."""
        return {**self.scorer.aggregate(rows), "protocol": self.protocol, "protocol_source": self.protocol_source}
