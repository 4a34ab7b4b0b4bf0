"""GPQA-Diamond: 198 four-way multiple-choice science questions, no history.

Options are shuffled per question by a permutation derived from a stable hash of `Record ID` and a
seed (hashlib, so it is the same on every machine and Python version). The model is asked for
`{"answer": "C"}`; `extract_letter` reads the letter back through a cascade of forms and the
extraction-failure rate is reported next to accuracy. The authors ask that GPQA questions never
appear in plain text: nothing here prints or stores question text outside memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from evals.data_files import read_text
from evals.types import BenchmarkDataError, Context, Generation, Item

LETTERS = "ABCD"
REQUIRED_COLUMNS = (
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "Record ID",
    "High-level domain",
)
CONDITIONS = ("full_context", "no_context", "memory_only", "recent_window")
MAX_NEW_TOKENS = 8192
_PERMUTATIONS = list(itertools.permutations(range(4)))  # 24, in lexicographic order

# The δ-mem paper's GPQA-Diamond accuracy (%), Qwen3-4B-Instruct-2507 backbone.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "frozen": {"overall": 39.39},
    "tsw": {"overall": 40.40},
}


def option_permutation(record_id: str, seed: int = 0) -> list[int]:
    """perm[i] = which original option is shown at letter i (0 = correct, 1..3 = incorrect 1..3)."""
    digest = hashlib.sha256(f"{record_id}|{seed}".encode("utf-8")).digest()
    return list(_PERMUTATIONS[int.from_bytes(digest[:8], "big") % len(_PERMUTATIONS)])


_JSON_RE = re.compile(r"""\{\s*["']?answer["']?\s*:\s*["']?\s*\(?\s*([A-Da-d])\s*\)?\s*["']?\s*\}""", re.I)
_BOXED_RE = re.compile(r"\\boxed\s*\{\s*(?:\\(?:text|mathrm|textbf)\s*\{)?\s*\(?\s*([A-D])\s*\)?\s*\}")
_ANSWER_RE = re.compile(
    r"answer(?:\s+is|\s*:)[\s:*_]*(?:option\s+|choice\s+)?[(\[]?\s*([A-D])\s*[)\]]?(?![A-Za-z0-9])", re.I
)
_LONE_RE = re.compile(r"^[(\[]?([A-D])[)\]]?[.:]?$")


def _last_group(pattern: re.Pattern[str], text: str, fold_case: bool = False) -> str | None:
    """The captured letter of the last match, upper-cased; case-sensitive letters unless fold_case."""
    found = None
    for match in pattern.finditer(text):
        letter = match.group(1)
        if fold_case or letter.isupper():
            found = letter.upper()
    return found


def _extract(text: str) -> str | None:
    for pattern, fold in ((_JSON_RE, True), (_BOXED_RE, False), (_ANSWER_RE, False)):
        letter = _last_group(pattern, text, fold)
        if letter is not None:
            return letter
    lines = [line.strip().strip("*`_ ").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    for line in lines[-1:] + lines[:1]:  # the last line wins over the first
        match = _LONE_RE.match(line)
        if match:
            return match.group(1)
    return None


def extract_letter(text: str) -> str | None:
    """The answer letter A–D in a model output, or None (JSON > \\boxed > "answer is" > lone letter)."""
    if not text:
        return None
    if "</think>" in text:  # a reasoning block: prefer what follows it
        letter = _extract(text.rsplit("</think>", 1)[1])
        if letter is not None:
            return letter
    return _extract(text)


def _read_csv(path: Path) -> list[dict[str, str]]:
    text = read_text(path)  # an empty or broken .gz is named as such, not as missing columns
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkDataError(f"{path}: GPQA CSV lacks column(s) {missing}")
        return list(reader)


class GPQADiamond:
    """GPQA-Diamond under the paper's protocol (shuffled options, JSON letter, greedy, 8,192 tokens)."""

    name = "gpqa"

    def __init__(
        self,
        source: str = "Idavidrein/gpqa",
        seed: int = 0,
        protocol: str = "paper",
        hub_config: str = "gpqa_diamond",
        hub_split: str = "train",
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> None:
        if protocol not in ("paper", "official"):  # GPQA defines one protocol; both names select it
            raise ValueError(f"unknown GPQA protocol {protocol!r} (expected 'paper' or 'official')")
        self.source = str(source)
        self.seed = int(seed)
        self.protocol = protocol
        self.hub_config = hub_config
        self.hub_split = hub_split
        self.max_new_tokens = int(max_new_tokens)

    def _records(self) -> tuple[str, Iterable[dict[str, Any]]]:
        path = Path(self.source).expanduser()
        if path.exists():
            return str(path), _read_csv(path)
        import datasets  # only for hub ids; tests never get here

        rows = datasets.load_dataset(self.source, self.hub_config, split=self.hub_split)
        return f"{self.source}[{self.hub_config}/{self.hub_split}]", [dict(row) for row in rows]

    def load(self) -> tuple[list[Context], list[Item]]:
        """No contexts; one item per question with its permuted options in meta."""
        origin, records = self._records()
        items: list[Item] = []
        seen: set[str] = set()
        for index, row in enumerate(records):
            for column in REQUIRED_COLUMNS:
                value = row.get(column)
                if not isinstance(value, str) or not value.strip():
                    raise BenchmarkDataError(f"{origin}: record {index} has an empty or missing {column!r}")
            record_id = row["Record ID"].strip()
            if record_id in seen:
                raise BenchmarkDataError(f"{origin}: record {index} repeats Record ID {record_id!r}")
            seen.add(record_id)
            original = [row["Correct Answer"]] + [row[f"Incorrect Answer {k}"] for k in (1, 2, 3)]
            perm = option_permutation(record_id, self.seed)
            correct = LETTERS[perm.index(0)]
            items.append(
                Item(
                    id=f"{record_id}/s{self.seed}",
                    question=row["Question"].strip(),
                    answers=[correct],
                    category=row["High-level domain"].strip(),
                    meta={
                        "record_id": record_id,
                        "seed": self.seed,
                        "permutation": perm,
                        "correct_letter": correct,
                        "options": [original[k].strip() for k in perm],
                        "subdomain": (row.get("Subdomain") or "").strip(),
                    },
                )
            )
        return [], items

    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        """The same single user turn under every condition (GPQA has no history)."""
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
        options = "\n".join(f"{letter}) {text}" for letter, text in zip(LETTERS, item.meta["options"]))
        content = (
            "Answer the following multiple-choice question. Reason step by step if it helps, then end "
            'your reply with your final answer as JSON, exactly {"answer": "X"}, where X is one of '
            f"A, B, C or D.\n\nQuestion: {item.question}\n\n{options}"
        )
        return [{"role": "user", "content": content}]

    def generation(self, item: Item) -> Generation:
        return Generation(max_new_tokens=self.max_new_tokens, do_sample=False)

    def score(self, output: str, item: Item) -> dict[str, float]:
        letter = extract_letter(output)
        return {
            "accuracy": float(letter is not None and letter == item.meta["correct_letter"]),
            "extraction_failed": float(letter is None),
        }

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Accuracy (%) overall and per high-level domain, plus the extraction-failure rate (%)."""
        by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_domain[str(row.get("category"))].append(row)

        def mean(key: str, group: Sequence[dict[str, Any]]) -> float:
            return 100.0 * sum(float(r[key]) for r in group) / len(group) if group else 0.0

        return {
            "overall": mean("accuracy", rows),
            "n": len(rows),
            "accuracy": mean("accuracy", rows),
            "extraction_failure_rate": mean("extraction_failed", rows),
            "per_category": {
                domain: {
                    "accuracy": mean("accuracy", group),
                    "extraction_failure_rate": mean("extraction_failed", group),
                    "n": len(group),
                }
                for domain, group in sorted(by_domain.items())
            },
            "protocol": self.protocol,
            "seed": self.seed,
        }
