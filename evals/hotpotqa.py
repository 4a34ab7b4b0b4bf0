"""HotpotQA (distractor): multi-hop QA over ten passages, scored by the official EM / token F1.

Accepts the official JSON list (`_id, question, answer, context [[title, [sentences]]],
supporting_facts, type?, level?`) or the HF dataset `hotpotqa/hotpot_qa` (context as
`{title: [...], sentences: [[...]]}`); both are normalised to the same records. One context per
question (its passages). Protocols differ only in the metric:
- "official": `hotpot_evaluate_v1` — F1 is 0 when either side normalises to yes/no/noanswer and
  the two differ.
- "paper": the public δ-mem release's F1, which omits that rule.
`score` gives fractions in [0, 1]; `aggregate` and `PAPER_NUMBERS` are percentages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from evals.data_files import looks_like_a_path, missing_file, read_json
from evals.text_metrics import exact_match, first_nonempty_line, normalize_answer, token_prf, weighted_means
from evals.types import BenchmarkDataError, Context, Generation, Item

# Qwen3-4B-Instruct-2507, EM / F1 %.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "frozen": {"em": 42.35, "f1": 56.00},
    "tsw": {"em": 49.41, "f1": 63.66},
}

CONDITIONS = ("full_context", "no_context", "memory_only", "recent_window")
SPECIAL_ANSWERS = ("yes", "no", "noanswer")
INSTRUCTION = (
    "Answer the question using only the passages. Reply with just a short answer span from the "
    "passages, or with yes or no."
)
QUESTION_INSTRUCTION = "Answer the question. Reply with just a short answer span, or with yes or no."


class HotpotQA:
    """The HotpotQA distractor benchmark (see the module docstring)."""

    name = "hotpotqa"

    def __init__(
        self,
        source: str,
        split: str = "validation",
        config: str = "distractor",
        limit: int | None = None,
        protocol: str = "official",
        window_chars: int = 2000,
    ) -> None:
        if protocol not in ("paper", "official"):
            raise ValueError(f"unknown HotpotQA protocol {protocol!r} (expected 'paper' or 'official')")
        self.source = str(source)
        self.split = split
        self.config = config
        self.limit = None if limit is None else int(limit)
        self.protocol = protocol
        self.window_chars = int(window_chars)

    # ----------------------------------------------------------------- loading
    def _records(self) -> list[dict[str, Any]]:
        path = Path(self.source)
        if path.exists():
            data: Any = read_json(path)
            if not isinstance(data, list):
                raise BenchmarkDataError(f"{self.source}: expected a JSON list of questions, got {type(data).__name__}")
        elif looks_like_a_path(self.source):
            raise missing_file(self.source, "HotpotQA")
        else:  # a hub id
            import datasets

            dataset = datasets.load_dataset(self.source, self.config, split=self.split)
            if self.limit is not None:
                dataset = dataset.select(range(min(self.limit, len(dataset))))
            data = [dict(row) for row in dataset]
        return data if self.limit is None else data[: self.limit]

    def load(self) -> tuple[list[Context], list[Item]]:
        """One context (the passages) and one item per question."""
        contexts: list[Context] = []
        items: list[Item] = []
        for index, record in enumerate(self._records()):
            where = f"{self.source}: record {index}"
            if not isinstance(record, dict):
                raise BenchmarkDataError(f"{where}: expected an object, got {type(record).__name__}")
            qid = record.get("_id", record.get("id"))
            if qid is None:
                raise BenchmarkDataError(f"{where}: missing field '_id'")
            where = f"{where} ({qid})"
            for field in ("question", "answer", "context"):
                if record.get(field) is None:
                    raise BenchmarkDataError(f"{where}: missing field {field!r}")
            passages = _passages(record["context"], where)
            context = Context(id=str(qid), meta={"passages": passages})
            context.text = render_passages(passages)
            context.messages = [{"role": "user", "content": context.text}]
            contexts.append(context)
            meta: dict[str, Any] = {"supporting_facts": _supporting_facts(record.get("supporting_facts"))}
            if record.get("level") is not None:
                meta["level"] = str(record["level"])
            category = None if record.get("type") is None else str(record["type"])
            items.append(Item(str(qid), str(record["question"]), [str(record["answer"])], str(qid), category, meta))
        return contexts, items

    # ----------------------------------------------------------------- prompting
    def history_messages(self, context: Context) -> list[dict[str, str]]:
        """The passages as one user message (what the runner writes into memory)."""
        return [dict(m) for m in context.messages]

    def history_text(self, context: Context) -> str:
        """The passages as plain text."""
        return context.text

    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        """A single user turn: instruction, passages (where the condition shows them), question."""
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r} (expected one of {CONDITIONS})")
        question = f"Question: {item.question}\nAnswer:"
        if condition in ("no_context", "memory_only"):
            return [{"role": "user", "content": f"{QUESTION_INSTRUCTION}\n\n{question}"}]
        if context is None:
            raise ValueError(f"condition {condition!r} needs the item's context")
        passages = context.meta["passages"]
        numbered = list(enumerate(passages, start=1))
        if condition == "recent_window":
            numbered = self._recent(numbered)
        body = "\n\n".join(render_passage(i, title, sentences) for i, (title, sentences) in numbered)
        return [{"role": "user", "content": f"{INSTRUCTION}\n\n{body}\n\n{question}"}]

    def _recent(self, numbered: list[tuple[int, tuple[str, list[str]]]]) -> list[tuple[int, tuple[str, list[str]]]]:
        """The last whole passages fitting `window_chars` (original numbering kept)."""
        keep: list[tuple[int, tuple[str, list[str]]]] = []
        used = 0
        for i, (title, sentences) in reversed(numbered):
            used += len(render_passage(i, title, sentences)) + 2
            if used > self.window_chars:
                break
            keep.insert(0, (i, (title, sentences)))
        return keep

    def generation(self, item: Item) -> Generation:
        """Greedy, 32 new tokens."""
        return Generation(max_new_tokens=32)

    # ----------------------------------------------------------------- scoring
    def score(self, output: str, item: Item) -> dict[str, float]:
        """EM and F1 of the first non-empty output line against the gold answer."""
        prediction = first_nonempty_line(output)
        gold = item.answers[0]
        return {"em": exact_match(prediction, gold), "f1": hotpot_f1(prediction, gold, self.protocol == "official")}

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Question-weighted EM/F1 (%) overall and per question type ("None" when records have no type).

        `overall` is EM, the figure the paper's aggregate averages.
        """
        means = weighted_means(rows, ("em", "f1"))
        return {"overall": means["em"], **means, "protocol": self.protocol}


def hotpot_f1(prediction: str, gold: str, yes_no_rule: bool = True) -> float:
    """Token F1 after `normalize_answer`; with `yes_no_rule`, 0 for a yes/no/noanswer mismatch."""
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if yes_no_rule and (pred in SPECIAL_ANSWERS or ref in SPECIAL_ANSWERS) and pred != ref:
        return 0.0
    return token_prf(pred.split(), ref.split())[2]


def render_passage(index: int, title: str, sentences: Sequence[str]) -> str:
    """`Passage {i} - {title}: ` followed by the passage's sentences."""
    text = " ".join(s.strip() for s in sentences if s.strip())
    return f"Passage {index} - {title}: {text}"


def render_passages(passages: Sequence[tuple[str, list[str]]]) -> str:
    """All passages numbered from 1, blank-line separated."""
    return "\n\n".join(render_passage(i, t, s) for i, (t, s) in enumerate(passages, start=1))


def _passages(raw: Any, where: str) -> list[tuple[str, list[str]]]:
    """[(title, sentences)] from the official list shape or the HF dict-of-lists shape."""
    if isinstance(raw, dict):
        if "title" not in raw or "sentences" not in raw:
            raise BenchmarkDataError(f"{where}: field 'context' needs 'title' and 'sentences'")
        pairs = list(zip(raw["title"], raw["sentences"], strict=True))
    else:
        pairs = []
        for p_index, entry in enumerate(raw):
            if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], (list, tuple)):
                raise BenchmarkDataError(f"{where}: context entry {p_index} is not [title, [sentences]]")
            pairs.append((entry[0], entry[1]))
    return [(str(title), [str(s) for s in sentences]) for title, sentences in pairs]


def _supporting_facts(raw: Any) -> list[tuple[str, int]]:
    """[(title, sentence id)] from either shape (empty when absent)."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [(str(t), int(i)) for t, i in zip(raw.get("title", []), raw.get("sent_id", []))]
    return [(str(t), int(i)) for t, i in raw]
