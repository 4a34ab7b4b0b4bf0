"""LoCoMo's output post-processing and per-category scores, one pair per scorer a protocol names.

- "release" (protocol paper, PAPER_PROTOCOL.md §1): backslash-quote → ', strip, the first non-empty
  line, lowercase, the substrings (a) (b) a) b) answer: deleted in that order, strip; normalisation
  with Unicode NFD; category-1 pieces without empty ones; every score rounded to 4 decimals.
- "v0" (protocols paper_v0 and official, the harness before 2026-12-03): the first non-empty line,
  lowercase, (a) (b) answer: deleted; no NFD; empty category-1 pieces count; no rounding.
Scores are fractions in [0, 1].
"""

from __future__ import annotations

from typing import Callable

from evals.text_metrics import first_nonempty_line, locomo_f1

ADVERSARIAL_PHRASES = ("no information available", "not mentioned")
_DROP_V0 = ("(a)", "(b)", "answer:")
_DROP_RELEASE = ("(a)", "(b)", "a)", "b)", "answer:")
DECIMALS = 4  # the release rounds each question's score before averaging


def postprocess_v0(output: str) -> str:
    """The harness's v0 post-processing: first non-empty line, lowercased, without (a), (b), answer:."""
    text = first_nonempty_line(output).lower()
    for junk in _DROP_V0:
        text = text.replace(junk, "")
    return text.strip()


def postprocess(output: str) -> str:
    """The release's post-processing (the six steps of PAPER_PROTOCOL.md §1, in order)."""
    text = str(output).replace('\\"', "'").strip()
    text = first_nonempty_line(text).lower()
    for junk in _DROP_RELEASE:
        text = text.replace(junk, "")
    return text.strip()


def _adversarial(prediction: str) -> float:
    lowered = prediction.lower()
    return float(any(phrase in lowered for phrase in ADVERSARIAL_PHRASES))


def score_v0(prediction: str, gold: str | int, category: str | int | None) -> float:
    """The v0 per-category rule on a post-processed prediction."""
    category, gold = str(category), str(gold)
    if category == "5":
        return _adversarial(prediction)
    if category == "1":
        predicted = [p.strip() for p in prediction.split(",")]
        golds = [g.strip() for g in gold.split(",")]
        return sum(max(locomo_f1(p, g) for p in predicted) for g in golds) / len(golds)
    if category == "3":
        gold = gold.split(";")[0].strip()
    return locomo_f1(prediction, gold)


def _pieces(text: str) -> list[str]:
    return [piece.strip() for piece in text.split(",") if piece.strip()]


def score_release(prediction: str, gold: str | int, category: str | int | None) -> float:
    """The release's per-category rule on a post-processed prediction, rounded to 4 decimals."""
    category, gold = str(category), str(gold)
    if category == "5":
        return _adversarial(prediction)
    if category == "1":
        predicted, golds = _pieces(prediction), _pieces(gold)
        if not golds:
            return 0.0
        best = [max((locomo_f1(p, g, nfd=True) for p in predicted), default=0.0) for g in golds]
        return round(sum(best) / len(golds), DECIMALS)
    if category == "3":
        gold = gold.split(";")[0].strip()
    return round(locomo_f1(prediction, gold, nfd=True), DECIMALS)


Scorer = tuple[Callable[[str], str], Callable[[str, str | int, str | int | None], float]]
SCORERS: dict[str, Scorer] = {"release": (postprocess, score_release), "v0": (postprocess_v0, score_v0)}


def scorer(name: str) -> Scorer:
    """(post-process, score) of the named scorer."""
    if name not in SCORERS:
        raise ValueError(f"unknown LoCoMo scorer {name!r} (expected one of {tuple(SCORERS)})")
    return SCORERS[name]
