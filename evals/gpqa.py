"""GPQA-Diamond: 198 four-way multiple-choice science questions, no history.

Each question's options are put in an order derived from a stable hash of `Record ID` and a seed, by
the protocol's rule (`conf/benchmark/gpqa.yaml`, `loader.prompts`):
- "paper": the δ-mem release exactly (PAPER_PROTOCOL.md §4): h = md5("{Record ID}:{seed}"), seed 42,
  `random.Random(int(h[:8], 16)).shuffle([0, 1, 2, 3])`; its prompt; its extraction cascade.
- "paper_v0" / "official": the harness before 2026-12-03: one of the 24 permutations picked by
  sha256("{Record ID}|{seed}"), seed 0; its prompt; its cascade (`evals/gpqa_extract.py`).
Slot k shows original option `order[k]` (0 = correct, 1..3 = incorrect 1..3). The extraction-failure
rate is reported next to accuracy. The authors ask that GPQA questions never appear in plain text:
nothing here prints or stores question text outside memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from evals.benchmark_base import BenchmarkBase
from evals.data_files import read_text
from evals.gpqa_extract import EXTRACTORS
from evals.templates import fill, protocol_prompts, protocols_of
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
MAX_NEW_TOKENS = 8192
REQUIRED = ("source", "user", "option", "option_join", "option_order", "seed", "extraction")
_PERMUTATIONS = list(itertools.permutations(range(4)))  # 24, in lexicographic order

# The δ-mem paper's GPQA-Diamond accuracy (%), Qwen3-4B-Instruct-2507 backbone.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "frozen": {"overall": 39.39},
    "tsw": {"overall": 40.40},
}


def option_permutation(record_id: str, seed: int = 0) -> list[int]:
    """paper_v0's order: perm[i] = the original option shown at letter i (sha256 of "{id}|{seed}")."""
    digest = hashlib.sha256(f"{record_id}|{seed}".encode("utf-8")).digest()
    return list(_PERMUTATIONS[int.from_bytes(digest[:8], "big") % len(_PERMUTATIONS)])


def release_order(record_id: str, seed: int = 42) -> list[int]:
    """The release's order: [0, 1, 2, 3] shuffled by Python's MT19937 seeded with md5("{id}:{seed}")[:8]."""
    order = [0, 1, 2, 3]
    random.Random(int(release_hash(record_id, seed)[:8], 16)).shuffle(order)
    return order


def release_hash(record_id: str, seed: int = 42) -> str:
    """md5("{Record ID}:{seed}") in hex, whose first 8 digits seed the release's shuffle."""
    return hashlib.md5(f"{record_id}:{seed}".encode("utf-8")).hexdigest()


ORDERS = {"md5_shuffle": release_order, "sha256_permutation": option_permutation}


def _read_csv(path: Path) -> list[dict[str, str]]:
    text = read_text(path)  # an empty or broken .gz is named as such, not as missing columns
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkDataError(f"{path}: GPQA CSV lacks column(s) {missing}")
        return list(reader)


class GPQADiamond(BenchmarkBase):
    """GPQA-Diamond under a protocol's option order, prompt and extraction (greedy, 8,192 tokens)."""

    name = "gpqa"

    def __init__(
        self,
        source: str = "Idavidrein/gpqa",
        seed: int | None = None,
        protocol: str = "paper",
        hub_config: str = "gpqa_diamond",
        hub_split: str = "train",
        max_new_tokens: int = MAX_NEW_TOKENS,
        prompts: Mapping[str, Any] | None = None,
    ) -> None:
        known = tuple(prompts) if prompts is not None else protocols_of(self.name)
        if protocol not in known:
            raise ValueError(f"unknown GPQA protocol {protocol!r} (expected one of {known})")
        self.source = str(source)
        self.protocol = protocol
        self.templates = protocol_prompts(self.name, protocol, prompts, REQUIRED)
        self.protocol_source = str(self.templates["source"])
        if self.templates["option_order"] not in ORDERS:
            raise ValueError(f"unknown GPQA option_order {self.templates['option_order']!r} (expected {tuple(ORDERS)})")
        if self.templates["extraction"] not in EXTRACTORS:
            raise ValueError(f"unknown GPQA extraction {self.templates['extraction']!r} (expected {tuple(EXTRACTORS)})")
        self.order = ORDERS[self.templates["option_order"]]
        self.extract = EXTRACTORS[self.templates["extraction"]]
        self.seed = int(self.templates["seed"] if seed is None else seed)
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
            perm = self.order(record_id, self.seed)
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
        self.prompt_layout(condition)
        t = self.templates
        options = t["option_join"].join(
            fill(t["option"], letter=letter, text=text) for letter, text in zip(LETTERS, item.meta["options"])
        )
        return [{"role": "user", "content": fill(t["user"], question=item.question, options=options)}]

    def generation(self, item: Item) -> Generation:
        return Generation(max_new_tokens=self.max_new_tokens, do_sample=False)

    def score(self, output: str, item: Item) -> dict[str, float]:
        letter = self.extract(output)
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
            "protocol_source": self.protocol_source,
            "seed": self.seed,
        }
