"""MemoryAgentBench (AR, TTL, LRU, SF/Conflict_Resolution) under the δ-mem paper's protocol.

One context per dataset row, one item per question ("inject once, query many"). The paper's
protocol: a unified short-answer prompt, the context pre-clipped to `max_context_chars`
characters (head third + tail two thirds around a marker), greedy decoding with per-source token
budgets, and per-source metrics (substring exact match; token F1 for infbench_sum; Recall@5 for
recsys_redial). Aggregates are question-weighted means, reported in percent.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from evals.data_files import load_hub_dataset, read_json
from evals.text_metrics import normalize_answer, token_prf
from evals.types import BenchmarkDataError, Context, Generation, Item

SPLITS = ("Accurate_Retrieval", "Test_Time_Learning", "Long_Range_Understanding", "Conflict_Resolution")
CONDITIONS = ("full_context", "no_context", "memory_only", "recent_window")
TRUNCATION_MARKER = "\n\n[... middle of the context truncated ...]\n\n"
INSTRUCTION = (
    "Answer the question using only the memory context. Give a short answer. "
    'If the memory context does not support an answer, reply "I don\'t know".'
)
# Per-family max new tokens (paper protocol); matched by prefix of the dataset family.
MAX_NEW_TOKENS = {"eventqa": 40, "ruler_qa": 50, "longmemeval": 50, "factconsolidation": 10, "icl_": 20}
MAX_NEW_TOKENS.update({"recsys": 300, "infbench_sum": 1200, "detective_qa": 2000})
DEFAULT_MAX_NEW_TOKENS = 50
METRICS = ("score", "exact_match", "substring_exact_match", "f1", "recall@5")

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


def max_new_tokens_for(family: str) -> int:
    for prefix, budget in MAX_NEW_TOKENS.items():
        if family.startswith(prefix):
            return budget
    return DEFAULT_MAX_NEW_TOKENS


def clip_context(text: str, max_chars: int | None, marker: str = TRUNCATION_MARKER) -> str:
    """Keep the first third and the last two thirds of a `max_chars` budget, joined by `marker`."""
    if max_chars is None or len(text) <= max_chars:
        return text
    head = max_chars // 3
    return text[:head] + marker + text[len(text) - (max_chars - head) :]


def exact_match(output: str, aliases: Sequence[str]) -> float:
    """1.0 when the whole normalised output equals some normalised alias."""
    pred = normalize_answer(output)
    return float(any(pred == normalize_answer(a) for a in aliases))


def substring_exact_match(output: str, aliases: Sequence[str]) -> float:
    """Paper accuracy: an alias equals the first line or the whole output, or is a substring of it."""
    whole = normalize_answer(output)
    first = normalize_answer(next((line for line in output.splitlines() if line.strip()), ""))
    for alias in aliases:
        gold = normalize_answer(alias)
        if gold and (gold == whole or gold == first or gold in whole):
            return 1.0
    return 0.0


def token_f1(output: str, aliases: Sequence[str]) -> float:
    """Best token-level F1 (normalised bag of words) over the aliases."""
    pred = normalize_answer(output).split()
    return max((token_prf(pred, normalize_answer(alias).split())[2] for alias in aliases), default=0.0)


_NUMBERED = re.compile(r"^\s*(?:\d{1,2}\s*[.)]|#\d+|[-*•])\s*")


def _title_key(title: str) -> str:
    """A normalised title without a "(1999)" year, for matching recommendations to gold items."""
    return normalize_answer(re.sub(r"\(\s*\d{4}\s*\)", " ", title))


def parse_ranked_list(output: str) -> list[str]:
    """Normalised items of a numbered/bulleted, newline- or comma-separated list, in order."""
    lines = [line for line in output.splitlines() if line.strip()]
    numbered = [line for line in lines if _NUMBERED.match(line)]
    if numbered:
        parts = numbered
    elif len(lines) == 1:
        parts = re.split(r"[,;]", lines[0])
    else:
        parts = lines
    items = [_title_key(re.split(r"\s+[-–—]\s+", _NUMBERED.sub("", part), maxsplit=1)[0]) for part in parts]
    return [item for item in items if item]


def recall_at_k(output: str, gold: Sequence[str], k: int = 5) -> float:
    """Fraction of the gold items among the first k items the output lists."""
    targets = {_title_key(g) for g in gold} - {""}
    if not targets:
        return 0.0
    top = parse_ranked_list(output)[:k]
    hits = sum(any(item == t or item.startswith(t + " ") for item in top) for t in targets)
    return hits / len(targets)


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


class MemoryAgentBench:
    """MemoryAgentBench loader, prompts, decoding budgets, metrics and question-weighted aggregation."""

    name = "memory_agent_bench"

    def __init__(
        self,
        source: str = "ai-hyz/MemoryAgentBench",
        splits: Sequence[str] = SPLITS,
        protocol: str = "paper",
        max_context_chars: int | None = 120_000,
        limit_rows: int | None = None,
        recent_window_chars: int = 16_000,
    ) -> None:
        if protocol != "paper":
            raise ValueError(f"MemoryAgentBench protocol {protocol!r} is not implemented (only 'paper')")
        self.source = source if hasattr(source, "rows") else str(source)  # a hub id, a JSON file or a builder
        self.splits = tuple(splits)
        self.protocol = protocol
        self.max_context_chars = max_context_chars
        self.limit_rows = limit_rows
        self.recent_window_chars = int(recent_window_chars)

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
                text = clip_context(row["context"], self.max_context_chars)
                if meta.get("rebuild"):  # not the hub row: the name says so wherever it is reported
                    family += "_standin" if source.endswith("_standin") else "_rebuild"
                    self.rebuilt[source] = str(meta["rebuild"])
                context_meta = {"split": split, "source": source, "dataset": family, "chars": len(row["context"])}
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

    def history_messages(self, context: Context) -> list[dict[str, str]]:
        """The (clipped) context as one user message, what memory methods memorise."""
        return [{"role": "user", "content": f"Memory context:\n{context.text}"}]

    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        """The unified prompt; the history is shown only under full_context / recent_window."""
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
        history = context.text if context is not None else ""
        if condition == "recent_window" and len(history) > self.recent_window_chars:
            history = "[... earlier context omitted ...]\n" + history[-self.recent_window_chars :]
        if condition in ("full_context", "recent_window"):
            content = f"Memory context:\n{history}\n\n{INSTRUCTION}\n\nQuestion: {item.question}\nAnswer:"
        else:  # no_context / memory_only: the question alone (memory_only reads the written state)
            content = f"{INSTRUCTION}\n\nQuestion: {item.question}\nAnswer:"
        return [{"role": "user", "content": content}]

    def generation(self, item: Item) -> Generation:
        return Generation(max_new_tokens=max_new_tokens_for(item.meta["dataset"]), do_sample=False)

    def score(self, output: str, item: Item) -> dict[str, float]:
        """exact_match, substring_exact_match, f1 (+ recall@5 for recsys); `score` = the source's metric."""
        family = item.meta["dataset"]
        scores = {
            "exact_match": exact_match(output, item.answers),
            "substring_exact_match": substring_exact_match(output, item.answers),
            "f1": token_f1(output, item.answers),
        }
        if family.startswith("recsys"):
            scores["recall@5"] = recall_at_k(output, item.answers, 5)
            scores["score"] = scores["recall@5"]
        elif family.startswith("infbench_sum"):
            scores["score"] = scores["f1"]
        else:
            scores["score"] = scores["substring_exact_match"]
        return scores

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Question-weighted means (%) of every metric: overall, per split, per dataset if rows name one."""

        def summary(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {"n": len(group)}
            for key in METRICS:
                values = [float(r[key]) for r in group if isinstance(r.get(key), (int, float))]
                if values:
                    out[key] = 100.0 * sum(values) / len(values)
            return out

        by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
        by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_category[str(row.get("category"))].append(row)
            if row.get("dataset") is not None:
                by_dataset[str(row["dataset"])].append(row)
        per_category = {c: summary(g) for c, g in sorted(by_category.items())}
        result: dict[str, Any] = {
            "overall": 100.0 * sum(float(r["score"]) for r in rows) / len(rows) if rows else 0.0,
            **summary(rows),
            "per_category": per_category,
            "category_mean": sum(c.get("score", 0.0) for c in per_category.values()) / max(1, len(per_category)),
            "protocol": self.protocol,
        }
        if by_dataset:
            result["per_dataset"] = {d: summary(g) for d, g in sorted(by_dataset.items())}
        return result
