"""MemoryAgentBench rows rebuilt offline, for the splits whose hub rows cannot be read here.

* `ICLRebuild`: Test-Time Learning. Its `icl_*` sources are built from intent datasets, the way the
  official harness builds them (HELMET's construction):
  - the labels are mapped to integers by a seeded permutation;
  - balanced demonstrations are drawn, one round of every label at a time, each round shuffled;
  - each demonstration is written as `"{text}\\nlabel: {label}"`, the demonstrations joined by blank
    lines into one long context;
  - label-balanced test utterances are the questions, and the answer is the integer label.
  Sources: BANKING77 (`banking77/{train,test}.csv`, CC BY 4.0) and CLINC150 (`clinc150/data_full.json`,
  in-scope intents, CC BY 3.0), both in the data directory. The default shots are HELMET's 4k-token
  lengths (180 and 220).
* `FactConsolidationStandIn`: Selective Forgetting (`Conflict_Resolution`). A seeded generator in the
  spirit of FactConsolidation: numbered facts about made-up people, where a later fact replaces an
  earlier one about the same person and relation, then questions about the latest value. The
  names are invented, so no answer can come from world knowledge.

Every row is marked as what it is. Its `metadata.source` ends in `_rebuild` or `_standin`, and
`metadata.rebuild` names its origin. `MemoryAgentBench` records that in every `results.json`
(`data`), because these rows are not the hub file and their scores are not the paper's. `scored_as`
(config) names the hub source whose generation budget, prompt templates and scoring rules a row
takes (`metadata.scored_as`).
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path
from typing import Any, Sequence

from evals.data_files import missing_file, read_json
from evals.types import BenchmarkDataError

ITEM_TEMPLATE = "{text}\nlabel: {label}"  # HELMET data_module/icl.py, item_template


def balanced(rows: Sequence[tuple[str, str]], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """`count` (text, label) rows drawn in rounds with one row of every label, each round shuffled."""
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    rounds = math.ceil(count / len(by_label))
    picked: list[list[tuple[str, str]]] = [[] for _ in range(rounds)]
    for label in sorted(by_label):
        pool = by_label[label]
        order: list[int] = []
        while len(order) < rounds:  # without replacement until a label runs out, then again
            order += rng.sample(range(len(pool)), min(rounds - len(order), len(pool)))
        for r, index in enumerate(order):
            picked[r].append(pool[index])
    for group in picked:
        rng.shuffle(group)
    return [row for group in picked for row in group][:count]


def read_banking77(folder: Path, split: str) -> list[tuple[str, str]]:
    path = folder / f"{split}.csv"
    if not path.is_file():
        raise missing_file(str(path), "BANKING77")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"text", "category"} <= set(reader.fieldnames):
            raise BenchmarkDataError(f"{path}: expected the columns text,category, got {reader.fieldnames}")
        out = []
        for line, row in enumerate(reader, start=2):
            for field in ("text", "category"):
                if not (row.get(field) or "").strip():
                    raise BenchmarkDataError(f"{path}: row {line}: field {field!r} is missing or empty")
            out.append((row["text"].strip(), row["category"].strip()))
    return out


def read_clinc150(path: Path, split: str) -> list[tuple[str, str]]:
    if not path.is_file():
        raise missing_file(str(path), "CLINC150")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get(split), list):
        raise BenchmarkDataError(f"{path}: split {split!r} is missing or not a list of [text, intent] pairs")
    out = []
    for index, pair in enumerate(data[split]):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) and x.strip() for x in pair)):
            raise BenchmarkDataError(f"{path}: split {split!r}, row {index}: expected [text, intent], got {pair!r}")
        out.append((pair[0].strip(), pair[1].strip()))
    return out


class ICLRebuild:
    """Test-Time Learning rows (one context of demonstrations, `questions` test utterances each)."""

    READERS = {
        "banking77": lambda root, split: read_banking77(root / "banking77", split),
        "clinc150": lambda root, split: read_clinc150(root / "clinc150" / "data_full.json", split),
    }
    DEFAULT_SHOTS = {"banking77": 180, "clinc150": 220}  # HELMET's 4k-token variants

    def __init__(self, data_dir: str, datasets: Sequence[str] = ("banking77", "clinc150"),
                 shots: dict[str, int] | None = None, questions: int = 100, seed: int = 42,
                 scored_as: dict[str, str] | None = None):
        unknown = [d for d in datasets if d not in self.READERS]
        if unknown:
            raise ValueError(f"unknown ICL dataset(s) {unknown}; choose from {sorted(self.READERS)}")
        self.root, self.datasets, self.questions, self.seed = Path(data_dir), tuple(datasets), int(questions), int(seed)
        self.shots = {**self.DEFAULT_SHOTS, **(shots or {})}
        self.scored_as = dict(scored_as or {})

    def rows(self) -> list[dict[str, Any]]:
        return [self.row(name) for name in self.datasets]

    def row(self, name: str) -> dict[str, Any]:
        train = self.READERS[name](self.root, "train")
        test = self.READERS[name](self.root, "test")
        rng = random.Random(f"{name}:{self.seed}")
        labels = sorted({label for _, label in train})
        numbers = list(range(len(labels)))
        rng.shuffle(numbers)
        to_int = dict(zip(labels, numbers))
        unseen = sorted({label for _, label in test} - set(to_int))
        if unseen:
            raise BenchmarkDataError(f"{name}: test labels {unseen[:3]} never occur in train")
        demos = balanced(train, self.shots[name], rng)
        asked = balanced(test, self.questions, rng)
        context = "\n\n".join(ITEM_TEMPLATE.format(text=text, label=to_int[label]) for text, label in demos)
        source = f"icl_{name}_{self.shots[name]}shot_balance_rebuild"
        return {
            "context": context,
            "questions": [text for text, _ in asked],
            "answers": [[str(to_int[label])] for _, label in asked],
            "metadata": {"source": source, "rebuild": f"rebuilt offline from {name} (HELMET ICL construction), "
                         f"seed {self.seed}; not the MemoryAgentBench hub row",
                         **({"scored_as": self.scored_as[name]} if name in self.scored_as else {})},
        }


FIRST_NAMES = ["Zorvan", "Quillet", "Maru", "Tessaly", "Ondrik", "Pelagia", "Vashti", "Corwen", "Ilsabet", "Drummon",
               "Yarrow", "Fenwick", "Ottoline", "Brisco", "Senna", "Halvard", "Ninian", "Ysolde", "Tarquin", "Emrys"]
FAMILY_NAMES = ["Kettleby", "Marrowind", "Ashgrove", "Pellinore", "Quorrin", "Varga", "Thistlewood", "Orrin",
                "Stavely", "Crane", "Duvall", "Everard", "Holloway", "Lindqvist", "Mabry", "Nettle"]
RELATIONS = {  # relation → (fact template, question template, values)
    "city": ("{who} lives in {value}.", "Which city does {who} live in?",
             ["Oslo", "Lima", "Cairo", "Perth", "Quito", "Riga", "Hanoi", "Dakar", "Porto", "Tunis"]),
    "job": ("{who} works as a {value}.", "What does {who} work as?",
            ["baker", "pilot", "surveyor", "glassblower", "archivist", "tailor", "ferrier", "cartographer"]),
    "pet": ("{who} owns a {value}.", "What animal does {who} own?",
            ["ferret", "parrot", "tortoise", "goat", "iguana", "hamster", "llama", "heron"]),
    "instrument": ("{who} plays the {value}.", "Which instrument does {who} play?",
                   ["cello", "oboe", "banjo", "harp", "tuba", "sitar", "accordion", "marimba"]),
}


class FactConsolidationStandIn:
    """Selective-Forgetting rows: numbered facts with later updates, questions about the latest value."""

    def __init__(self, rows: int = 2, people: int = 40, updates: float = 0.5, questions: int = 50, seed: int = 42,
                 scored_as: str | None = None):
        if not 0 <= updates <= 1:
            raise ValueError(f"updates is the share of facts that are later replaced, in [0, 1], got {updates}")
        self.count, self.people, self.updates, self.questions, self.seed = rows, people, updates, questions, seed
        self.scored_as = scored_as
        if people > len(FIRST_NAMES) * len(FAMILY_NAMES):
            raise ValueError(f"at most {len(FIRST_NAMES) * len(FAMILY_NAMES)} people")

    def rows(self) -> list[dict[str, Any]]:
        return [self.row(k) for k in range(self.count)]

    def row(self, index: int) -> dict[str, Any]:
        rng = random.Random(f"factconsolidation:{self.seed}:{index}")
        names = rng.sample([f"{a} {b}" for a in FIRST_NAMES for b in FAMILY_NAMES], self.people)
        facts: list[tuple[str, str, str]] = []  # (who, relation, value), in serial order
        latest: dict[tuple[str, str], str] = {}
        for who in names:
            for relation in rng.sample(sorted(RELATIONS), 2):
                value = rng.choice(RELATIONS[relation][2])
                facts.append((who, relation, value))
                latest[(who, relation)] = value
        rng.shuffle(facts)
        for key in rng.sample(sorted(latest), round(self.updates * len(latest))):
            old = latest[key]
            new = rng.choice([v for v in RELATIONS[key[1]][2] if v != old])
            facts.append((*key, new))  # appended: always a larger serial number than the fact it replaces
            latest[key] = new
        lines = [f"{n}. " + RELATIONS[r][0].format(who=w, value=v) for n, (w, r, v) in enumerate(facts)]
        context = ("Each fact has a serial number; a fact with a larger number replaces an earlier fact about the "
                   "same person and relation.\n" + "\n".join(lines))
        updated = {(w, r) for w, r, _ in facts[len(latest):]}
        asked = rng.sample(sorted(updated), min(self.questions, len(updated)))  # questions whose answer changed
        return {
            "context": context,
            "questions": [RELATIONS[r][1].format(who=w) for w, r in asked],
            "answers": [[latest[(w, r)]] for w, r in asked],
            "metadata": {"source": f"factconsolidation_sh_{len(lines)}facts_r{index}_standin",
                         "rebuild": f"a seeded stand-in for FactConsolidation (seed {self.seed}); "
                         "not the MemoryAgentBench hub row",
                         **({"scored_as": self.scored_as} if self.scored_as else {})},
        }


class RebuiltSplits:
    """`MemoryAgentBench(source=RebuiltSplits(...))`: {split: [rows]} from the builders above."""

    def __init__(self, splits: dict[str, Sequence[Any]]):
        self.splits = {split: list(builders) for split, builders in splits.items()}

    def __str__(self) -> str:
        return "rebuilt:" + ",".join(f"{s}={[type(b).__name__ for b in bs]}" for s, bs in self.splits.items())

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        return {split: [row for b in builders for row in b.rows()] for split, builders in self.splits.items()}


__all__ = ["FactConsolidationStandIn", "ICLRebuild", "RebuiltSplits", "balanced", "read_banking77", "read_clinc150"]
