"""HotpotQA (distractor): multi-hop QA over ten passages, scored by the official EM / token F1.

Accepts the official JSON list (`_id, question, answer, context [[title, [sentences]]],
supporting_facts, type?, level?`) or the HF dataset `hotpotqa/hotpot_qa` (context as
`{title: [...], sentences: [[...]]}`); both are normalised to the same records. One context per
question (its passages). Protocols, each a prompt set in `conf/benchmark/hotpotqa.yaml`
(`loader.prompts`) with a scorer:
- "official": the harness prompt; `hotpot_evaluate_v1`'s metric — F1 is 0 when either side normalises
  to yes/no/noanswer and the two differ.
- "paper": the δ-mem release's evaluation exactly (PAPER_PROTOCOL.md §2): its prompt and passage
  blocks, `normalize_qa_span` (punctuation → space), F1 1 when both sides normalise to nothing, no
  yes/no rule, per-question F1 rounded to 4 decimals, breakdowns by type and level.
- "paper_v0": what `paper` named until 2026-12-03: the official prompt and metric without the yes/no rule.
`score` gives fractions in [0, 1]; `aggregate` and `PAPER_NUMBERS` are percentages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from evals.benchmark_base import BenchmarkBase
from evals.data_files import looks_like_a_path, missing_file, read_json
from evals.templates import fill, protocol_prompts, protocols_of
from evals.text_metrics import (
    exact_match,
    first_nonempty_line,
    normalize_answer,
    normalize_qa_span,
    token_prf,
    weighted_means,
)
from evals.types import BenchmarkDataError, Context, Generation, Item, Passage

# Qwen3-4B-Instruct-2507, EM / F1 %.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "frozen": {"em": 42.35, "f1": 56.00},
    "tsw": {"em": 49.41, "f1": 63.66},
}

SPECIAL_ANSWERS = ("yes", "no", "noanswer")
REQUIRED = (
    "source", "user", "user_no_context", "passage", "passage_join", "no_passages", "skip_empty_passages",
    "strip_question", "scorer", "decoding",
)  # fmt: skip
SCORERS = ("release", "official", "v0")
DECIMALS = 4  # the release rounds each question's F1 before averaging
Numbered = list[tuple[int, tuple[str, list[str]]]]


class HotpotQA(BenchmarkBase):
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
        prompts: Mapping[str, Any] | None = None,
    ) -> None:
        known = tuple(prompts) if prompts is not None else protocols_of(self.name)
        if protocol not in known:
            raise ValueError(f"unknown HotpotQA protocol {protocol!r} (expected one of {known})")
        self.source = str(source)
        self.split = split
        self.config = config
        self.limit = None if limit is None else int(limit)
        self.protocol = protocol
        self.templates = protocol_prompts(self.name, protocol, prompts, REQUIRED)
        self.protocol_source = str(self.templates["source"])
        self.scorer = str(self.templates["scorer"])
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown HotpotQA scorer {self.scorer!r} (expected one of {SCORERS})")
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
            context.text, context.passages = self.render_with_spans(list(enumerate(passages, start=1)))
            context.messages = [{"role": "user", "content": context.text}]
            contexts.append(context)
            meta: dict[str, Any] = {"supporting_facts": _supporting_facts(record.get("supporting_facts"))}
            if record.get("level") is not None:
                meta["level"] = str(record["level"])
            category = None if record.get("type") is None else str(record["type"])
            items.append(Item(str(qid), str(record["question"]), [str(record["answer"])], str(qid), category, meta))
        return contexts, items

    # ----------------------------------------------------------------- prompting
    def history_text(self, context: Context) -> str:
        """The passages as plain text."""
        return context.text

    def render_passage(self, index: int, title: str, sentences: Sequence[str]) -> str | None:
        """Passage `index` through the protocol's template; None when the protocol skips it (no text)."""
        text = passage_text(sentences)
        if not text and self.templates["skip_empty_passages"]:
            return None
        return fill(self.templates["passage"], index=index, title=title, text=text)

    def render_with_spans(self, numbered: Numbered) -> tuple[str, list[Passage]]:
        """The context block (`render_passages`), and each shown passage's block in it (message 0:
        the history is one user message), so no method has to find the blocks in the text again."""
        joint = str(self.templates["passage_join"])
        pieces: list[str] = []
        spans: list[Passage] = []
        at = 0
        for index, (title, sentences) in numbered:
            block = self.render_passage(index, title, sentences)
            if block is None:
                continue
            if pieces:
                at += len(joint)
            spans.append(Passage(index=index, title=title, message=0, span=(at, at + len(block))))
            pieces.append(block)
            at += len(block)
        text = joint.join(pieces) if pieces else str(self.templates["no_passages"])
        return text, spans

    def render_passages(self, numbered: Numbered) -> str:
        """The context block: the numbered passages joined, or `no_passages` when none is shown."""
        return self.render_with_spans(numbered)[0]

    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        """A single user turn: instruction, passages (where the condition shows them), question."""
        numbered = self.shown_history(condition, item, context)
        question = item.question.strip() if self.templates["strip_question"] else item.question
        if numbered is None:
            content = fill(self.templates["user_no_context"], context=self.render_passages([]), question=question)
            return [{"role": "user", "content": content}]
        content = fill(self.templates["user"], context=self.render_passages(numbered), question=question)
        return [{"role": "user", "content": content}]

    def full_history(self, item: Item, context: Context) -> Numbered:
        """Every passage with its 1-based number."""
        return list(enumerate(context.meta["passages"], start=1))

    def recent_history(self, item: Item, context: Context) -> Numbered:
        """The last whole passages fitting `window_chars` (original numbering kept)."""
        numbered = self.full_history(item, context)
        keep: Numbered = []
        used = 0
        joint = len(self.templates["passage_join"])
        for i, (title, sentences) in reversed(numbered):
            block = self.render_passage(i, title, sentences)
            if block is None:
                continue
            used += len(block) + joint
            if used > self.window_chars:
                break
            keep.insert(0, (i, (title, sentences)))
        return keep

    def generation(self, item: Item) -> Generation:
        """The protocol's `decoding` (config: greedy, 32 new tokens)."""
        return Generation(**self.templates["decoding"])

    # ----------------------------------------------------------------- scoring
    def score(self, output: str, item: Item) -> dict[str, float]:
        """EM and F1 of the first non-empty output line against the gold answer, by the protocol's scorer."""
        gold = item.answers[0]
        if self.scorer == "release":
            prediction, reference = normalize_qa_span(first_nonempty_line(output)), normalize_qa_span(gold.strip())
            return {"em": float(prediction == reference), "f1": release_f1(prediction, reference)}
        prediction = first_nonempty_line(output)
        return {"em": exact_match(prediction, gold), "f1": hotpot_f1(prediction, gold, self.scorer == "official")}

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Question-weighted EM/F1 (%) overall and per question type ("None" when records have no type);
        under the release's scorer also per `level` where the records carry one.

        `overall` is EM, the figure the paper's aggregate averages.
        """
        means = weighted_means(rows, ("em", "f1"))
        out = {"overall": means["em"], **means, "protocol": self.protocol, "protocol_source": self.protocol_source}
        if self.scorer == "release" and any(row.get("level") is not None for row in rows):
            by_level = [{**row, "category": row.get("level")} for row in rows]
            out["per_level"] = weighted_means(by_level, ("em", "f1"))["per_category"]
        return out


def hotpot_f1(prediction: str, gold: str, yes_no_rule: bool = True) -> float:
    """Token F1 after `normalize_answer`; with `yes_no_rule`, 0 for a yes/no/noanswer mismatch."""
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if yes_no_rule and (pred in SPECIAL_ANSWERS or ref in SPECIAL_ANSWERS) and pred != ref:
        return 0.0
    return token_prf(pred.split(), ref.split())[2]


def release_f1(prediction: str, reference: str) -> float:
    """The release's token F1 of two normalised strings: 1 when both are empty, 0 when one is; 4 decimals."""
    pred, ref = prediction.split(), reference.split()
    if not pred or not ref:
        return float(not pred and not ref)
    return round(token_prf(pred, ref)[2], DECIMALS)


def passage_text(sentences: Sequence[str]) -> str:
    """A passage's text: its stripped, non-empty sentences joined by one space."""
    return " ".join(s.strip() for s in sentences if s.strip())


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
