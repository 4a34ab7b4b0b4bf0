"""The δ-mem release's MemoryAgentBench scoring (`protocol=paper`), PAPER_PROTOCOL.md §5.1, §5.4, §5.5.

Source: `declare-lab/delta-Mem` @ `5cd5d91`, `deltamem/eval/` (as PAPER_PROTOCOL.md transcribes it).
N is the release's `normalize_qa_span` (`evals.text_metrics`); `pred` is the stripped output and
`first` its first non-empty stripped line.
- Aliases: each stringified and stripped; empty ones, ones whose N is empty and ones repeating an
  earlier N are dropped.
- `accuracy` ("Acc"): 0 when N(pred) and N(first) are both empty; 1 when some alias has
  N(alias) == N(first), N(alias) == N(pred), or N(alias) a **character substring** of N(pred) (alias
  `4` matches `label 43`).
- `f1`: the largest token F1 over {pred, first} × aliases, blank texts skipped (both sides empty
  would score 1), rounded to 4 decimals.
- `recall@5` (recsys only): the official harness's Recall@5 (evals/mab_recsys.py), rounded to 4 decimals.
- `score`: the source's metric (config `headline`: Recall@5 for recsys, token F1 for InfBench-Sum,
  Acc for every other source, unknown ones included).
Aggregation is question-weighted throughout (evals/mab_aggregate.py `weighted_summary`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from evals.mab_aggregate import first_match, weighted_summary
from evals.mab_recsys import configured_catalog
from evals.text_metrics import first_nonempty_line, normalize_qa_span

METRICS = ("score", "accuracy", "f1", "recall@5")


def clean_aliases(answers: Any) -> list[str]:
    """The release's alias list: a list, stringified, stripped, without empty or N-duplicate entries."""
    kept: list[str] = []
    seen: set[str] = set()
    for answer in answers if isinstance(answers, list) else [answers]:
        text = str(answer).strip()
        key = normalize_qa_span(text)
        if text and key and key not in seen:
            seen.add(key)
            kept.append(text)
    return kept


def span_f1(prediction: str, gold: str) -> float:
    """Token F1 over N; 1.0 when both sides normalise to nothing, 0.0 when one side does."""
    pred, ref = normalize_qa_span(prediction).split(), normalize_qa_span(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def accuracy(output: str, aliases: Sequence[str]) -> float:
    """The release's Acc (module docstring) over already cleaned aliases."""
    whole = normalize_qa_span(output.strip())
    first = normalize_qa_span(first_nonempty_line(output))
    if not whole and not first:
        return 0.0
    for alias in aliases:
        gold = normalize_qa_span(alias)
        if gold and (gold == first or gold == whole or gold in whole):
            return 1.0
    return 0.0


def best_f1(output: str, aliases: Sequence[str]) -> float:
    """max F1 over {stripped output, first line} × aliases, skipping blank strings."""
    texts = [t for t in (output.strip(), first_nonempty_line(output)) if t.strip()]
    return max((span_f1(t, a) for t in texts for a in aliases if a.strip()), default=0.0)


class PaperScorer:
    """Scores one output the way the δ-mem release does; settings come from the benchmark config.

    `headline`: ordered rules `{any_of/all_of: [substrings of the source], metric}`; `headline_default`
    for every other source. `recsys`: the rule (same shape) naming the sources scored by Recall@5.
    """

    name = "paper"

    def __init__(
        self,
        headline: Sequence[dict[str, Any]],
        headline_default: str,
        recsys: dict[str, Any],
        round_digits: int = 4,
        recsys_entities: str | None = None,
    ) -> None:
        self.headline = [dict(r) for r in headline]
        self.headline_default = headline_default
        self.recsys = dict(recsys)
        self.round_digits = int(round_digits)
        self.recsys_entities = recsys_entities

    def score(self, output: str, answers: Sequence[str], source: str) -> dict[str, float]:
        """accuracy and f1 (and recall@5 for recsys); `score` = the source's headline metric."""
        aliases = clean_aliases(list(answers))
        scores = {"accuracy": accuracy(output, aliases), "f1": round(best_f1(output, aliases), self.round_digits)}
        if first_match([self.recsys], source):
            recall = configured_catalog(self.recsys_entities).recall(output.strip(), aliases, (5,))[5]
            scores["recall@5"] = round(recall, self.round_digits)
        metric = (first_match(self.headline, source) or {"metric": self.headline_default})["metric"]
        if metric not in scores:
            raise ValueError(f"source {source!r}: headline metric {metric!r} is not among {sorted(scores)}")
        return {"score": scores[metric], **scores}

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return weighted_summary(rows, METRICS)


__all__ = ["PaperScorer", "accuracy", "best_f1", "clean_aliases", "span_f1"]
