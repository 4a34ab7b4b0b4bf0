"""Answer normalisation, token F1 and aggregation helpers shared by the QA benchmarks.

Two normalisations exist because the benchmarks' official scripts differ:

- `normalize_answer` (SQuAD / HotpotQA `hotpot_evaluate_v1`): lowercase, drop punctuation, drop the
  articles a/an/the, collapse whitespace.
- `normalize_locomo` (LoCoMo `task_eval`): drop commas first, then the same steps with "and" removed
  as well; LoCoMo then Porter-stems every token (`stem_tokens`, nltk is a hard dependency). The δ-mem
  release puts a Unicode NFD between the commas and the lowercasing (`nfd=True`).
- `normalize_qa_span` (the δ-mem release's HotpotQA/MemoryAgentBench normaliser): lowercase, articles
  a/an/the replaced by a space, then every character that is neither a word character nor whitespace
  replaced by a space (not deleted), whitespace collapsed.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Any, Iterable, Sequence

from nltk.stem import PorterStemmer

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ARTICLES_AND = re.compile(r"\b(a|an|the|and)\b")
_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]")
_STEMMER = PorterStemmer()


def _strip_punctuation(text: str) -> str:
    return "".join(ch for ch in text if ch not in _PUNCTUATION)


def normalize_answer(text: str) -> str:
    """SQuAD/HotpotQA normalisation: lowercase, no punctuation, no a/an/the, single spaces."""
    text = _strip_punctuation(str(text).lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalize_qa_span(text: str) -> str:
    """The release's `normalize_qa_span`: lowercase, a/an/the → space, non-word characters → space."""
    text = _ARTICLES.sub(" ", str(text).lower())
    return " ".join(_NOT_WORD_OR_SPACE.sub(" ", text).split())


def normalize_locomo(text: str, nfd: bool = False) -> str:
    """LoCoMo normalisation: no commas, (NFD,) lowercase, no punctuation, no a/an/the/and, single spaces."""
    text = str(text).replace(",", "")
    if nfd:
        text = unicodedata.normalize("NFD", text)
    text = _strip_punctuation(text.lower())
    text = _ARTICLES_AND.sub(" ", text)
    return " ".join(text.split())


def stem_tokens(tokens: Iterable[str]) -> list[str]:
    """Porter-stem each token (nltk's PorterStemmer, default NLTK_EXTENSIONS mode)."""
    return [_STEMMER.stem(token) for token in tokens]


def token_prf(prediction_tokens: Sequence[str], gold_tokens: Sequence[str]) -> tuple[float, float, float]:
    """Bag-of-tokens precision, recall and F1; all zero when nothing overlaps (or a side is empty)."""
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(gold_tokens)
    return precision, recall, 2 * precision * recall / (precision + recall)


def token_f1(prediction_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    """Bag-of-tokens F1 (see `token_prf`)."""
    return token_prf(prediction_tokens, gold_tokens)[2]


def locomo_f1(prediction: str, gold: str, nfd: bool = False) -> float:
    """LoCoMo token F1: `normalize_locomo`, whitespace tokens, Porter stems (0 when a side is empty)."""
    pred, ref = normalize_locomo(prediction, nfd).split(), normalize_locomo(gold, nfd).split()
    return token_f1(stem_tokens(pred), stem_tokens(ref))


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when both sides are equal after `normalize_answer`."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def first_nonempty_line(text: str) -> str:
    """The first line of `text` that is not blank, stripped ("" when there is none)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def weighted_means(
    rows: Sequence[dict[str, Any]],
    metrics: Sequence[str],
    exclude_from_overall: Iterable[str] = (),
) -> dict[str, Any]:
    """Question-weighted means (%) of each metric overall and per category, each with its count `n`.

    Every row counts once, so a category weighs as many questions as it has. Rows whose category is
    in `exclude_from_overall` are reported per category but left out of the top-level means.
    Returns `{metric: %, ..., "n": n, "per_category": {category: {metric: %, ..., "n": n}}}`.
    """
    excluded = {str(c) for c in exclude_from_overall}
    groups: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        values = {metric: float(row[metric]) for metric in metrics}
        groups.setdefault(str(row.get("category")), []).append(values)

    def summary(group: Sequence[dict[str, float]]) -> dict[str, Any]:
        means = {m: (100.0 * sum(v[m] for v in group) / len(group) if group else 0.0) for m in metrics}
        return {**means, "n": len(group)}

    counted = [v for category, group in groups.items() if category not in excluded for v in group]
    return {**summary(counted), "per_category": {c: summary(groups[c]) for c in sorted(groups)}}
