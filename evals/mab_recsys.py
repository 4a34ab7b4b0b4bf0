"""MemoryAgentBench's movie-recommendation score (Recall@k), as the official harness computes it.

Source: `HUST-AI-HYZ/MemoryAgentBench` @ `455306d`, `utils/eval_other_utils.py` (`_process_recsys_dataset`
and its helpers); the δ-mem release scores `recsys_redial` with that same code (PAPER_PROTOCOL.md §5.4),
so both protocols use this module. It needs the harness's `processed_data/Recsys_Redial/entity2id.json`
(movie entity name -> id); the gold answers are entity ids.

1. The output is split at its first `"1."`; without one, commas become newlines and all of it is kept.
2. Every line (blank ones too) is cleaned: `(...)` groups removed, then a leading number such as
   `3.` / `3)` / `3、` with an optional dash, then runs of whitespace collapsed.
3. Each cleaned line becomes the candidate movie nearest to it by edit distance (both lowercased);
   a blank line becomes the shortest name, as in the harness.
4. Recall@k = the share of the gold movies found among the first k predicted movies.

One deviation: the harness breaks ties between equally near names by the iteration order of a
Python `set` (it changes with the hash seed); here the first name in sorted order wins.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from evals.types import BenchmarkDataError

_PARENTHESES = re.compile(r"\([^()]*\)")
_NUMBERING = re.compile(r"^(?:\d+[\.\)、]?\s*[\-\—\–]?\s*)?")
_SPACES = re.compile(r"\s+")


def movie_name(entity: str) -> str:
    """A display name from an entity string: its last path part, `_ - >` as spaces, no `(...)`."""
    name = entity.split("/")[-1]
    for separator in ("_", "-", ">"):
        name = name.replace(separator, " ")
    return _SPACES.sub(" ", _PARENTHESES.sub("", name)).strip()


def clean_line(line: str) -> str:
    """A recommendation line without `(...)`, its leading number, and extra whitespace."""
    return _SPACES.sub(" ", _NUMBERING.sub("", _PARENTHESES.sub("", line))).strip()


def recommendation_lines(output: str) -> list[str]:
    """The cleaned lines after the first `"1."` (or of the whole output, commas as line breaks)."""
    head, found, rest = output.partition("1.")
    text = rest if found else output.replace(",", "\n")
    return [clean_line(line.strip()) for line in text.split("\n")]


def edit_distance(a: str, b: str, limit: int | None = None) -> int:
    """Levenshtein distance; once it must exceed `limit`, returns `limit + 1` early."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        if limit is not None and min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


class MovieCatalog:
    """The candidate movies of `entity2id.json`, with nearest-name lookup and Recall@k."""

    def __init__(self, entity_to_id: dict[str, int], origin: str = "entity2id.json"):
        self.origin = origin
        self.names = {int(entity_id): movie_name(entity) for entity, entity_id in entity_to_id.items()}
        self.candidates = sorted(set(self.names.values()))
        self._lowered = [c.lower() for c in self.candidates]

    @classmethod
    def from_file(cls, path: str | Path) -> "MovieCatalog":
        return _catalog(str(Path(path).expanduser()))

    def nearest(self, line: str) -> str:
        """The candidate name with the smallest lowercase edit distance (first in sorted order on ties)."""
        return self._nearest(line.lower())

    @lru_cache(maxsize=65536)
    def _nearest(self, target: str) -> str:
        best, best_index = None, 0
        for index, candidate in enumerate(self._lowered):
            if best is not None and abs(len(candidate) - len(target)) >= best:
                continue  # cannot come strictly nearer
            distance = edit_distance(target, candidate, None if best is None else best - 1)
            if best is None or distance < best:
                best, best_index = distance, index
        return self.candidates[best_index]

    def gold_names(self, answers: Sequence[str]) -> list[str]:
        """The gold entity ids (strings of integers) as movie names."""
        names = []
        for answer in answers:
            try:
                names.append(self.names[int(str(answer).strip())])
            except (ValueError, KeyError):
                why = f"recsys gold answer {answer!r} is not an entity id of {self.origin}"
                raise BenchmarkDataError(why) from None
        return names

    def recall(self, output: str, answers: Sequence[str], ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
        """{k: Recall@k} of the output's recommendations against the gold entity ids."""
        if not self.candidates:
            raise BenchmarkDataError(f"{self.origin} lists no movies")
        gold = self.gold_names(answers)
        if not gold:
            raise BenchmarkDataError("a recsys question without gold movies cannot be scored")
        predicted = [self.nearest(line) for line in recommendation_lines(output)]
        return {k: sum(movie in predicted[:k] for movie in gold) / len(gold) for k in ks}


def configured_catalog(path: str | Path | None) -> MovieCatalog:
    """The catalogue at `benchmark.loader.recsys_entities`, or an error saying that it must be set."""
    if not path:
        raise BenchmarkDataError("recsys questions need benchmark.loader.recsys_entities (MemoryAgentBench's "
                                 "processed_data/Recsys_Redial/entity2id.json)")
    return MovieCatalog.from_file(path)


@lru_cache(maxsize=4)
def _catalog(path: str) -> MovieCatalog:
    file = Path(path)
    if not file.is_file():
        raise BenchmarkDataError(
            f"{path}: recsys_redial is scored against MemoryAgentBench's processed_data/Recsys_Redial/"
            "entity2id.json; put it there or set benchmark.loader.recsys_entities=<path>"
        )
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise BenchmarkDataError(f"{path}: expected an object {{movie entity: integer id}}")
    return MovieCatalog(data, origin=path)


__all__ = ["MovieCatalog", "clean_line", "configured_catalog", "edit_distance", "movie_name", "recommendation_lines"]
