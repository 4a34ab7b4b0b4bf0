"""MemoryAgentBench's own scorer (`protocol=official`), rule by rule.

Source: `HUST-AI-HYZ/MemoryAgentBench` @ `455306d`, `utils/eval_other_utils.py` (`calculate_metrics`,
`parse_output`, `post_process` and its per-dataset helpers). Re-implemented, not imported: that
module pulls in tiktoken, nltk downloads and numpy at import time.

Per question, `calculate_metrics(prediction, aliases)` gives, each the maximum over the aliases:
- `exact_match`: N(prediction) == N(alias), N being SQuAD's normaliser (lowercase, punctuation
  deleted, a/an/the removed, whitespace collapsed; `evals.text_metrics.normalize_answer`);
- `f1`: token F1 over N, 0 when either side is yes/no/noanswer and the two differ;
- `substring_exact_match`: N(alias) is a substring of N(prediction). **An empty alias is a substring
  of everything**, so a question with an empty (or all-punctuation) alias always scores 1;
- `rougeL_f1`, `rougeL_recall`, `rougeLsum_f1`, `rougeLsum_recall`: the `rouge-score` package with
  the Porter stemmer (extra `mab-official`).

Which of those a source gets, and on what text, is the route (`post_process`, by substrings of the
source name, in the config): `default` (max of each metric over the raw and the `parse_output`
text), `icl` (parsed text only), `eventqa` (parsed text, plus `eventqa_recall`: 1 when every alias
occurs, lowercased, in the raw output), `choice` (InfBench choice: `substring_exact_match` is
"the second alias, lowercased, occurs in the raw output", and it forces `exact_match` to 1),
`ruler_niah` (only `ruler_recall`: the share of aliases occurring in the raw output) and `recsys`
(`recsys_recall@{1,5,10}`, evals/mab_recsys.py). The headline metric per source (`score`) follows
MemoryAgentBench's metric table; where that table names an LLM judge the config names the
automatic stand-in, and results say so (`notes`).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Sequence

from evals.mab_aggregate import first_match, macro_summary
from evals.mab_recsys import MovieCatalog, configured_catalog
from evals.text_metrics import normalize_answer

SPECIAL_ANSWERS = ("yes", "no", "noanswer")
ROUGE_TYPES = ("rougeL", "rougeLsum")
EXTRA = "mab-official"
EMPTY_GOLD_NOTE = (
    "substring_exact_match counts an empty (or all-punctuation) alias as found in any output, as the "
    "official harness does"
)


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 after SQuAD normalisation; 0 for a yes/no/noanswer mismatch or no overlap."""
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in SPECIAL_ANSWERS or ref in SPECIAL_ANSWERS) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def substring_exact_match(prediction: str, gold: str) -> float:
    """N(gold) in N(prediction); an empty N(gold) is in every prediction."""
    return float(normalize_answer(gold) in normalize_answer(prediction))


def parse_output(output: str, prefix: str = "Answer:") -> str:
    """The text after the first `prefix` on its line (case-insensitive), else the first line; a
    repeated prefix at its start is dropped."""
    match = re.search(f"(?:{prefix})(.*)(?:\n|$)", output, flags=re.IGNORECASE)
    if match is None:
        match = re.search(r"(?:^)(.*)(?:\n|$)", output)
    text = match[1].strip()
    return re.sub(f"^{re.escape(prefix)}", "", text, flags=re.IGNORECASE).strip()


@lru_cache(maxsize=1)
def rouge_scorer() -> Any:
    """`rouge_score.rouge_scorer.RougeScorer(['rougeL', 'rougeLsum'], use_stemmer=True)`, imported lazily."""
    try:
        from rouge_score import rouge_scorer as module
    except ImportError as error:
        raise ImportError(
            "MemoryAgentBench protocol=official scores ROUGE-L with the rouge-score package: "
            f"pip install 'deltamem-harness[{EXTRA}]' (or pip install rouge-score)"
        ) from error
    return module.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def calculate_metrics(prediction: str, aliases: Sequence[str]) -> dict[str, float]:
    """exact_match, f1, substring_exact_match and ROUGE-L(sum) f1/recall, each maxed over the aliases."""
    if not aliases:
        raise ValueError("the official scorer needs at least one alias (its max over none fails)")
    metrics = {
        "exact_match": max(exact_match(prediction, a) for a in aliases),
        "f1": max(f1_score(prediction, a) for a in aliases),
        "substring_exact_match": max(substring_exact_match(prediction, a) for a in aliases),
    }
    scores = [rouge_scorer().score(target=a, prediction=prediction) for a in aliases]
    for kind in ROUGE_TYPES:
        metrics[f"{kind}_f1"] = max(s[kind].fmeasure for s in scores)
        metrics[f"{kind}_recall"] = max(s[kind].recall for s in scores)
    return metrics


def found_share(output: str, aliases: Sequence[str]) -> float:
    """The share of aliases that occur, lowercased, in the lowercased raw output."""
    lowered = output.lower()
    return sum(a.lower() in lowered for a in aliases) / len(aliases)


# ----------------------------------------------------------------------------- post-process routes
def default_route(output: str, aliases: Sequence[str], scorer: "OfficialScorer") -> dict[str, float]:
    """Every metric as the larger of its value on the raw output and on `parse_output`'s text."""
    raw, parsed = calculate_metrics(output, aliases), calculate_metrics(parse_output(output), aliases)
    return {k: max(v, parsed[k]) for k, v in raw.items()}


def icl_route(output: str, aliases: Sequence[str], scorer: "OfficialScorer") -> dict[str, float]:
    """In-context learning: the metrics of the parsed text only (prefix "Answer:", not "label:")."""
    return calculate_metrics(parse_output(output), aliases)


def eventqa_route(output: str, aliases: Sequence[str], scorer: "OfficialScorer") -> dict[str, float]:
    """EventQA: the parsed text's metrics plus `eventqa_recall` (1 only when every alias occurs)."""
    metrics = calculate_metrics(parse_output(output), aliases)
    metrics["eventqa_recall"] = float(found_share(output, aliases) == 1)
    return metrics


def choice_route(output: str, aliases: Sequence[str], scorer: "OfficialScorer") -> dict[str, float]:
    """InfBench choice: the default max without substring match, which becomes "the second alias
    occurs in the raw output" (lowercased) and, when true, sets exact_match."""
    if len(aliases) < 2:
        raise ValueError(f"the InfBench choice rule reads the second alias; this question has {list(aliases)}")
    metrics = default_route(output, aliases, scorer)
    metrics["substring_exact_match"] = float(aliases[1].lower() in output.lower())
    if metrics["substring_exact_match"]:
        metrics["exact_match"] = 1.0
    return metrics


def ruler_niah_route(output: str, aliases: Sequence[str], scorer: "OfficialScorer") -> dict[str, float]:
    """RULER needle-in-a-haystack: only `ruler_recall`, the share of aliases in the raw output."""
    return {"ruler_recall": found_share(output, aliases)}


def recsys_route(output: str, aliases: Sequence[str], scorer: "OfficialScorer") -> dict[str, float]:
    """Movie recommendation: Recall@1/5/10 against the gold entity ids."""
    recall = scorer.catalog().recall(output, aliases, (1, 5, 10))
    return {f"recsys_recall@{k}": value for k, value in recall.items()}


ROUTES: dict[str, Callable[[str, Sequence[str], "OfficialScorer"], dict[str, float]]] = {
    "default": default_route,
    "icl": icl_route,
    "eventqa": eventqa_route,
    "choice": choice_route,
    "ruler_niah": ruler_niah_route,
    "recsys": recsys_route,
}
METRICS = (
    "score", "exact_match", "f1", "substring_exact_match",
    *(f"{kind}_{part}" for kind in ROUGE_TYPES for part in ("f1", "recall")),
    "eventqa_recall", "ruler_recall", "recsys_recall@1", "recsys_recall@5", "recsys_recall@10",
)


class OfficialScorer:
    """Scores one output per MemoryAgentBench's harness; settings come from the benchmark config.

    `routes`: ordered rules `{any_of: [...], all_of: [...], route: name}` over the source name (the
    first rule whose substrings match wins; `default` otherwise). `headline`: ordered rules
    `{any_of/all_of, metric, judge?}` choosing `score`; `judge` names the LLM judge a stand-in
    replaces. `columns`: rules naming the MemoryAgentBench table column of a source, for `aggregate`.
    """

    name = "official"

    def __init__(
        self,
        routes: Sequence[dict[str, Any]],
        headline: Sequence[dict[str, Any]],
        headline_default: str,
        columns: Sequence[dict[str, Any]] = (),
        recsys_entities: str | None = None,
    ) -> None:
        unknown = sorted({r["route"] for r in routes} - set(ROUTES))
        if unknown:
            raise ValueError(f"unknown official MemoryAgentBench route(s) {unknown}; known: {sorted(ROUTES)}")
        self.routes = [dict(r) for r in routes]
        self.headline = [dict(r) for r in headline]
        self.headline_default = headline_default
        self.columns = [dict(r) for r in columns]
        self.recsys_entities = recsys_entities

    def catalog(self) -> MovieCatalog:
        return configured_catalog(self.recsys_entities)

    def route(self, source: str) -> str:
        rule = first_match(self.routes, source)
        return rule["route"] if rule else "default"

    def headline_rule(self, source: str) -> dict[str, Any]:
        return first_match(self.headline, source) or {"metric": self.headline_default}

    def score(self, output: str, aliases: Sequence[str], source: str) -> dict[str, float]:
        """The route's metrics for `source` and `score`, its headline metric."""
        metrics = {k: float(v) for k, v in ROUTES[self.route(source)](output, list(aliases), self).items()}
        headline = self.headline_rule(source)["metric"]
        if headline not in metrics:
            raise ValueError(f"source {source!r}: headline metric {headline!r} is not among {sorted(metrics)}")
        return {"score": metrics[headline], **metrics}

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """MemoryAgentBench's table: column means, category = mean of its columns, overall = mean of
        categories; `notes` state the empty-gold quirk and every judge replaced by a stand-in."""

        def column(row: dict[str, Any]) -> str:
            rule = first_match(self.columns, str(row.get("dataset")))
            return rule["column"] if rule else str(row.get("dataset"))

        notes = [EMPTY_GOLD_NOTE]
        for dataset in sorted({str(r.get("dataset")) for r in rows}):
            rule = self.headline_rule(dataset)
            if rule.get("judge"):
                notes.append(f"{dataset}: `score` is {rule['metric']}, an automatic stand-in for the official "
                             f"{rule['judge']}")
        return {**macro_summary(rows, column, METRICS), "notes": notes}


__all__ = ["OfficialScorer", "ROUTES", "calculate_metrics", "exact_match", "f1_score", "parse_output",
           "substring_exact_match"]
