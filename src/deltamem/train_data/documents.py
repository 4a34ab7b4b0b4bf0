"""Shared machinery of the document-QA episode sources (COVID-QA, FriendsQA, L-Eval, BAMBOO).

A source parses its files into `Document`s (a title and message-sized text pieces) and `Question`s
(a question on one document, its answer and where the evidence lies). `DocumentEpisodes` turns a
question into an episode: the target document (whole, or a window holding the evidence when it is
longer than the history budget allows), other documents of the same split as distractors around it
up to the budget, the question with an instruction, and the answer. The history budget is estimated
without a tokenizer: characters / `chars_per_token` plus a per-message template overhead.

Splits are by document: sha256 of (source, document id) puts a document in "dev" with probability
`dev_fraction`, independent of every other document. Episodes are seeded by sha256 of (seed,
source, question id, draw), never by Python's salted `hash`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "dev", "all")
_BLOCK = re.compile(r"\n\s*\n|\n|(?=<(?:P|H[1-6]|Table|Tr|Ul|Ol|Dl|Li)>)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")


def stable_int(*parts: object) -> int:
    """A 256-bit integer from sha256 of the parts joined with '|' (stable across processes)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest(), "big")


def document_split(source: str, doc_id: str, dev_fraction: float) -> str:
    """'dev' or 'train' for one document, from sha256 of (source, document id) alone."""
    return "dev" if stable_int("deltamem.split", source, doc_id) / 2**256 < dev_fraction else "train"


def require_file(path: str) -> Path:
    """The path as a `Path`; a clear FileNotFoundError when it is not a file."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such file; set DELTAMEM_DATA_DIR (paths.data_dir) to the data folder")
    return file


def squash(text: str) -> str:
    """Whitespace collapsed to single spaces, ends stripped."""
    return " ".join(text.split())


def words(text: str) -> set[str]:
    """Lower-cased word set (for unigram overlap)."""
    return set(_WORD.findall(text.lower()))


def _split_long(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """Cut [start, end) of text into spans of at most `limit` chars: sentences, then whitespace."""
    spans, pos = [], start
    for m in list(_SENTENCE.finditer(text, start, end)) + [None]:
        stop = m.start() if m else end
        while stop - pos > limit:
            cut = text.rfind(" ", pos + 1, pos + limit + 1)
            cut = cut if cut > pos else pos + limit
            spans.append((pos, cut))
            pos = cut
        if stop > pos:
            spans.append((pos, stop))
        pos = m.end() if m else end
    return spans


def chunk_spans(text: str, chunk_chars: int) -> list[tuple[int, int]]:
    """Character spans of `text` in chunks of at most `chunk_chars`, cut at paragraph (newline or
    HTML block tag) boundaries, then sentence ends, then spaces; leading/trailing whitespace dropped."""
    units: list[tuple[int, int]] = []
    pos = 0
    for m in list(_BLOCK.finditer(text)) + [None]:
        stop = m.start() if m else len(text)
        if stop > pos:
            units += _split_long(text, pos, stop, chunk_chars)
        pos = m.end() if m else len(text)
    chunks: list[list[int]] = []
    for s, e in units:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s == e:
            continue
        if chunks and e - chunks[-1][0] <= chunk_chars:
            chunks[-1][1] = e
        else:
            chunks.append([s, e])
    return [(s, e) for s, e in chunks]


@dataclass(frozen=True)
class Document:
    """One document: id, title (header line; may be empty), message-sized pieces, distractor group."""

    doc_id: str
    title: str
    pieces: tuple[str, ...]
    group: str = ""


@dataclass(frozen=True)
class Question:
    """A question on one document. The target window is grown from `anchor` (pieces [lo, hi)), inside
    `region` first; without an anchor it is the window with the most words of `overlap_text`, among
    windows holding one of `candidates` when there are any. `evidence` is text the history should hold."""

    qid: str
    doc_id: str
    text: str
    answer: str
    anchor: tuple[int, int] | None = None
    region: tuple[int, int] | None = None
    candidates: tuple[int, ...] = ()
    overlap_text: str = ""
    evidence: str = ""
    meta: dict = field(default_factory=dict)


class DocumentEpisodes:
    """Base of the document-QA sources: lazy loading, split by document, packing, `__getitem__`.

    Subclasses set `source` (name), `default_instructions`, `default_system_prompt` and implement
    `_read()` → (documents, questions) over all splits. Options (all keyword, plain types):
    split ("train" | "dev" | "all"), dev_fraction, seed, max_history_tokens, chars_per_token,
    chunk_chars (capped at half the packing budget), instructions (templates with "{question}"; None:
    the source's own), system_prompt ("default": the source's own; None: never), system_prompt_prob,
    history_fraction (share of max_history_tokens packed: a safety margin for the tokenizer's tail
    truncation), target_max_fraction (share of the budget a windowed target may take; the rest holds
    distractors), message_overhead_tokens, distractors (False: the target alone).
    """

    source = "documents"
    default_instructions: tuple[str, ...] = ("Answer the question about what you have read.\n\nQuestion: {question}",)
    default_system_prompt = "You are a helpful assistant. Answer questions using the documents shared earlier."

    def __init__(
        self,
        split: str = "train",
        dev_fraction: float = 0.1,
        seed: int = 0,
        max_history_tokens: int = 2048,
        chars_per_token: float = 3.5,
        chunk_chars: int = 1200,
        instructions: Sequence[str] | None = None,
        system_prompt: str | None = "default",
        system_prompt_prob: float = 0.5,
        history_fraction: float = 0.9,
        target_max_fraction: float = 0.6,
        message_overhead_tokens: int = 5,
        distractors: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if not 0.0 <= float(dev_fraction) <= 1.0:
            raise ValueError(f"dev_fraction must be in [0, 1], got {dev_fraction}")
        if float(chars_per_token) <= 0 or int(chunk_chars) < 1 or int(max_history_tokens) < 1:
            raise ValueError("chars_per_token, chunk_chars and max_history_tokens must be positive")
        if not 0.0 < float(history_fraction) <= 1.0 or not 0.0 < float(target_max_fraction) <= 1.0:
            raise ValueError("history_fraction and target_max_fraction must be in (0, 1]")
        if not 0.0 <= float(system_prompt_prob) <= 1.0:
            raise ValueError(f"system_prompt_prob must be in [0, 1], got {system_prompt_prob}")
        templates = [str(t) for t in (instructions if instructions is not None else self.default_instructions)]
        if not templates or any("{question}" not in t for t in templates):
            raise ValueError("instructions must be a non-empty list of templates, each containing '{question}'")
        self.split, self.dev_fraction, self.seed = split, float(dev_fraction), int(seed)
        self.max_history_tokens, self.chars_per_token = int(max_history_tokens), float(chars_per_token)
        self.instructions = templates
        self.system_prompt = self.default_system_prompt if system_prompt == "default" else system_prompt
        self.system_prompt_prob, self.history_fraction = float(system_prompt_prob), float(history_fraction)
        self.target_max_fraction, self.overhead = float(target_max_fraction), int(message_overhead_tokens)
        self.distractors = bool(distractors)
        self.budget = self.max_history_tokens * self.history_fraction
        self.chunk_chars = max(16, min(int(chunk_chars), int((self.budget / 2 - self.overhead) * self.chars_per_token)))
        self._docs: dict[str, Document] | None = None
        self._questions: list[Question] = []
        self._pools: dict[tuple[str, str], list[str]] = {}
        self._costs: dict[str, list[float]] = {}
        self._bags: dict[str, list[set[str]]] = {}

    # ---- loading -------------------------------------------------------------------------------
    def _read(self) -> tuple[list[Document], list[Question]]:
        raise NotImplementedError

    def split_key(self, doc: Document) -> str:
        """The source name that seeds a document's split (L-Eval: per task)."""
        return self.source

    def _load(self) -> dict[str, Document]:
        if self._docs is None:
            docs, questions = self._read()
            by_id: dict[str, Document] = {}
            for doc in docs:
                by_id.setdefault(doc.doc_id, doc)
            keep = {d for d, doc in by_id.items() if self.split in ("all", self._split_of(doc))}
            self._questions = [q for q in questions if q.doc_id in keep]
            for d in sorted(keep):  # distractors: same group, same split as the target
                self._pools.setdefault((by_id[d].group, self._split_of(by_id[d])), []).append(d)
            self._docs = by_id
        return self._docs

    def _split_of(self, doc: Document) -> str:
        return document_split(self.split_key(doc), doc.doc_id, self.dev_fraction)

    def split_documents(self) -> dict[str, list[str]]:
        """Sorted document ids of each split ("train", "dev"), over all documents of the files."""
        out: dict[str, list[str]] = {"train": [], "dev": []}
        for d, doc in sorted(self._load().items()):
            out[self._split_of(doc)].append(d)
        return out

    def __len__(self) -> int:
        self._load()
        return len(self._questions)

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> dict:
        return self.episode(index)

    # ---- budget --------------------------------------------------------------------------------
    def tokens(self, text: str) -> float:
        """Estimated tokens of one message: chars / chars_per_token + template overhead."""
        return len(text) / self.chars_per_token + self.overhead

    def _piece_costs(self, doc: Document) -> list[float]:
        if doc.doc_id not in self._costs:
            self._costs[doc.doc_id] = [self.tokens(p) for p in doc.pieces]
        return self._costs[doc.doc_id]

    def _header(self, position: int, doc: Document) -> str:
        return f"Document {position}: {doc.title}" if doc.title else f"Document {position}"

    def _header_cost(self, doc: Document) -> float:
        return (len(self._header(999, doc)) + 1) / self.chars_per_token

    def _cost(self, doc: Document, lo: int, hi: int) -> float:
        return self._header_cost(doc) + sum(self._piece_costs(doc)[lo:hi])

    # ---- windows -------------------------------------------------------------------------------
    def _grow(self, doc: Document, q: Question, limit: float, rng: random.Random) -> tuple[int, int]:
        costs, (lo, hi) = self._piece_costs(doc), q.anchor or (0, 1)
        used = self._cost(doc, lo, hi)
        while hi - lo > 1 and used > limit:  # evidence alone too long: keep its start
            hi -= 1
            used -= costs[hi]
        regions = [q.region, (0, len(costs))] if q.region else [(0, len(costs))]
        for r_lo, r_hi in regions:
            while True:
                sides = [s for s, ok in (("L", lo > r_lo), ("R", hi < r_hi)) if ok]
                sides = [s for s in sides if used + costs[lo - 1 if s == "L" else hi] <= limit]
                if not sides:
                    break
                if rng.choice(sides) == "L":
                    lo, used = lo - 1, used + costs[lo - 1]
                else:
                    hi, used = hi + 1, used + costs[hi]
        return lo, hi

    def _best_window(self, doc: Document, q: Question, limit: float) -> tuple[int, int]:
        costs, goal = self._piece_costs(doc), words(q.overlap_text)
        bags = self._bags.setdefault(doc.doc_id, [words(p) for p in doc.pieces])
        best: tuple[int, int, int] | None = None
        for need in (set(q.candidates), set()):
            for s in range(len(costs)):
                e, used, seen = s, self._header_cost(doc), set()
                while e < len(costs) and used + costs[e] <= limit:
                    used, seen, e = used + costs[e], seen | bags[e], e + 1
                if e == s or (need and not need.intersection(range(s, e))):
                    continue
                score = len(goal & seen)
                if best is None or score > best[0]:
                    best = (score, s, e)
            if best is not None:
                return best[1], best[2]
        return 0, 1

    def _target_window(self, doc: Document, q: Question, budget: float, rng: random.Random) -> tuple[int, int]:
        if self._cost(doc, 0, len(doc.pieces)) <= budget:
            return 0, len(doc.pieces)
        limit = budget * self.target_max_fraction
        if q.anchor and self._cost(doc, *q.anchor) > limit:
            limit = budget
        if q.anchor:
            return self._grow(doc, q, limit, rng)
        return self._best_window(doc, q, limit)

    def evidence_in(self, q: Question, kept: str) -> bool:
        """Whether the question's evidence text is in the kept target text (whitespace-insensitive)."""
        return bool(q.evidence) and squash(q.evidence) in kept

    # ---- episodes ------------------------------------------------------------------------------
    def episode(self, index: int, draw: int = 0) -> dict:
        """The episode of question `index`; `draw` > 0 gives fresh distractors, position and prompts."""
        docs = self._load()
        if not -len(self._questions) <= index < len(self._questions):
            raise IndexError(f"episode {index} out of range for {len(self._questions)} episodes")
        q = self._questions[index]
        target = docs[q.doc_id]
        rng = random.Random(stable_int("deltamem.episode", self.seed, self.source, q.qid, draw))
        use_system = bool(self.system_prompt) and rng.random() < self.system_prompt_prob
        instruction = rng.randrange(len(self.instructions))
        budget = self.budget - (self.tokens(self.system_prompt) if use_system else 0.0)
        lo, hi = self._target_window(target, q, budget, rng)
        room = budget - self._cost(target, lo, hi)
        placed: list[tuple[Document, int, int]] = []
        pool = self._pools.get((target.group, self._split_of(target)), []) if self.distractors else []
        pool = [d for d in pool if d != target.doc_id]
        rng.shuffle(pool)
        for d in pool:
            doc = docs[d]
            costs, start = self._piece_costs(doc), 0
            if self._cost(doc, 0, len(costs)) > room:
                start = rng.randrange(len(costs))
            end, used = start, self._header_cost(doc)
            while end < len(costs) and used + costs[end] <= room:
                used, end = used + costs[end], end + 1
            if end > start:
                placed.append((doc, start, end))
                room -= used
            if end < len(costs) and end > start:
                break  # a partial document filled the budget
        position = rng.randint(0, len(placed))
        placed.insert(position, (target, lo, hi))
        messages = [{"role": "system", "content": self.system_prompt}] if use_system else []
        for k, (doc, a, b) in enumerate(placed, start=1):
            pieces = list(doc.pieces[a:b])
            pieces[0] = f"{self._header(k, doc)}\n{pieces[0]}"
            messages += [{"role": "user", "content": p} for p in pieces]
        kept = squash(" ".join(target.pieces[lo:hi]))
        question = self.instructions[instruction].format(question=q.text)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": q.answer}]
        history = messages[:-2]
        meta = {
            "source": self.source,
            "doc_id": q.doc_id,
            "question_id": q.qid,
            "split": self._split_of(target),
            "draw": draw,
            "target_position": position,
            "num_documents": len(placed),
            "num_distractors": len(placed) - 1,
            "distractor_ids": [doc.doc_id for doc, _, _ in placed if doc is not target],
            "target_window": [lo, hi],
            "target_pieces": len(target.pieces),
            "target_complete": (lo, hi) == (0, len(target.pieces)),
            "answer_in_history": self.evidence_in(q, kept),
            "history_tokens": round(sum(self.tokens(m["content"]) for m in history), 1),
            "history_chars": sum(len(m["content"]) for m in history),
            "instruction": instruction,
            "system_prompt": use_system,
            **q.meta,
        }
        suffix = f"#{draw}" if draw else ""
        return {"id": f"{self.source}:{q.qid}{suffix}", "messages": messages, "answer": q.answer, "meta": meta}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, seed={self.seed}, "
            f"max_history_tokens={self.max_history_tokens}, chunk_chars={self.chunk_chars})"
        )
