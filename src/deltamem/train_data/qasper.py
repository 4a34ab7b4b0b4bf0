"""Qasper papers as memory episodes: read the paper as chat turns, then answer one question about it.

`source` is a hub dataset id (default `allenai/qasper`, loaded with `datasets.load_dataset` on first
use) or a local JSON file holding a list of papers in the same (HF) schema:
`id, title, abstract, full_text: {section_name: [str], paragraphs: [[str]]}, qas: {question: [str],
question_id: [str], answers: [{answer: [{unanswerable, extractive_spans, yes_no, free_form_answer,
evidence, highlighted_evidence}], annotation_id: [str], worker_id: [str]}]}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REQUIRED_FIELDS = (
    "id",
    "title",
    "abstract",
    "full_text.section_name",
    "full_text.paragraphs",
    "qas.question",
    "qas.question_id",
    "qas.answers",
)
ACKS = ["Got it.", "Noted, please continue.", "Understood.", "Okay, I have read that part."]
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. You have read a research paper shared earlier in the "
    "conversation; answer questions about it concisely."
)


def _annotations(entry: Mapping) -> Iterator[tuple[str, Mapping]]:
    ids = list(entry.get("annotation_id") or [])
    for j, ans in enumerate(entry["answer"]):
        yield (str(ids[j]) if j < len(ids) else str(j)), ans


def choose_answer(entry: Mapping) -> tuple[str, str, str] | None:
    """(answer text, kind, annotation id) for one question's `answers` entry, or None if unanswerable.

    Annotators in order; skip one marked unanswerable; else its free-form answer if non-empty, else its
    extractive spans joined with ", ", else "Yes"/"No" from `yes_no`; one with none of these is skipped.
    """
    for annotation, ans in _annotations(entry):
        if ans.get("unanswerable"):
            continue
        free = (ans.get("free_form_answer") or "").strip()
        spans = [s.strip() for s in ans.get("extractive_spans") or [] if s and s.strip()]
        if free:
            return free, "free_form", annotation
        if spans:
            return ", ".join(spans), "extractive", annotation
        if ans.get("yes_no") is not None:
            return ("Yes" if ans["yes_no"] else "No"), "yes_no", annotation
    return None


def _evidence(entry: Mapping, annotation: str) -> list[str]:
    return next(([e for e in ans.get("evidence") or [] if e] for a, ans in _annotations(entry) if a == annotation), [])


def _check_paper(paper: object, index: int, where: str) -> None:
    if not isinstance(paper, Mapping):
        raise ValueError(f"{where}: paper {index} is a {type(paper).__name__}, expected an object")
    for field in REQUIRED_FIELDS:
        node: object = paper
        for part in field.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(f"{where}: paper {index} (id {paper.get('id', '?')!r}) is missing field {field!r}")
            node = node[part]
    qas, text = paper["qas"], paper["full_text"]
    if not len(qas["question"]) == len(qas["question_id"]) == len(qas["answers"]):
        raise ValueError(f"{where}: paper {index}: qas.question, qas.question_id and qas.answers differ in length")
    for k, entry in enumerate(qas["answers"]):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("answer"), Sequence):
            raise ValueError(f"{where}: paper {index} (id {paper['id']!r}) is missing field 'qas.answers[{k}].answer'")
    if len(text["section_name"]) != len(text["paragraphs"]):
        raise ValueError(f"{where}: paper {index}: full_text.section_name and full_text.paragraphs differ in length")


class QasperEpisodes:
    """One episode per answerable Qasper question: paper chunks as history, the question, the answer.

    History: a user message with title and abstract, then the sections' paragraphs (each section's first
    paragraph headed by its name) in user messages of `paragraphs_per_message` paragraphs, each followed
    by a short assistant acknowledgement. With `max_write_chars`, trailing chunks are dropped until the
    history (system message included) fits; a single chunk that alone is too long is cut. Construction
    is free: the data loads on first access.
    """

    def __init__(
        self,
        source: str = "allenai/qasper",
        split: str = "train",
        max_write_chars: int | None = 24000,
        paragraphs_per_message: int = 4,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        if int(paragraphs_per_message) < 1:
            raise ValueError(f"paragraphs_per_message must be >= 1, got {paragraphs_per_message}")
        if max_write_chars is not None and int(max_write_chars) < len(system_prompt or ""):
            raise ValueError(
                f"max_write_chars ({max_write_chars}) must be None or hold at least the system prompt "
                f"({len(system_prompt or '')} chars)"
            )
        self.source, self.split, self.system_prompt = str(source), str(split), system_prompt
        self.max_write_chars = None if max_write_chars is None else int(max_write_chars)
        self.paragraphs_per_message = int(paragraphs_per_message)
        self._papers: Sequence[Mapping] | None = None
        self._index: list[tuple[int, int, str, str, str]] | None = None

    def _is_local(self) -> bool:
        return os.path.exists(self.source) or self.source.endswith((".json", "/")) or self.source.startswith((".", "/"))

    def _load(self) -> Sequence[Mapping]:
        if self._is_local():
            path = Path(self.source)
            if not path.is_file():
                raise FileNotFoundError(f"Qasper source {self.source!r}: no such file")
            papers = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(papers, list):
                raise ValueError(f"{self.source}: expected a JSON list of papers, got {type(papers).__name__}")
            return papers
        try:
            import datasets

            return datasets.load_dataset(self.source, split=self.split)
        except Exception as exc:  # the hub, the cache or the id failed: say what to do instead
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RuntimeError(
                f"could not load Qasper {self.source!r} (split {self.split!r}) from the hub: "
                f"{type(exc).__name__}: {reason}; pass source=<path to a local JSON list of "
                f"papers in the HF schema> instead"
            ) from exc

    def _build(self) -> list[tuple[int, int, str, str, str]]:
        if self._index is None:
            papers = self._load()
            index = []
            for p in range(len(papers)):
                paper = papers[p]
                _check_paper(paper, p, self.source)
                for q, answers in enumerate(paper["qas"]["answers"]):
                    chosen = choose_answer(answers)
                    if chosen is not None:
                        index.append((p, q, *chosen))
            self._papers, self._index = papers, index
        return self._index

    def __len__(self) -> int:
        return len(self._build())

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def _chunks(self, paper: Mapping) -> list[str]:
        paragraphs = []
        for name, paras in zip(paper["full_text"]["section_name"], paper["full_text"]["paragraphs"]):
            kept = [t.strip() for t in paras if t and t.strip()]
            if kept and name:
                kept[0] = f"## {name}\n{kept[0]}"
            paragraphs += kept
        head = f"Here is a research paper.\n\nTitle: {paper['title']}\n\nAbstract: {paper['abstract'].strip()}"
        step = self.paragraphs_per_message
        return [head] + ["\n\n".join(paragraphs[i : i + step]) for i in range(0, len(paragraphs), step)]

    def __getitem__(self, i: int) -> dict:
        index = self._build()
        if not -len(index) <= i < len(index):
            raise IndexError(f"episode {i} out of range for {len(index)} episodes")
        p, q, answer, kind, annotation = index[i]
        paper = self._papers[p]
        qas = paper["qas"]
        history = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        used, truncated, chunks = sum(len(m["content"]) for m in history), False, self._chunks(paper)
        for c, chunk in enumerate(chunks):
            ack = ACKS[c % len(ACKS)]
            room = None if self.max_write_chars is None else self.max_write_chars - used - len(ack)
            if room is not None and len(chunk) > room:
                truncated = True
                if c == 0 and room > 0:  # keep at least the start of the paper
                    history += [{"role": "user", "content": chunk[:room]}, {"role": "assistant", "content": ack}]
                    used += room + len(ack)
                break
            history += [{"role": "user", "content": chunk}, {"role": "assistant", "content": ack}]
            used += len(chunk) + len(ack)
        text = "\n".join(m["content"] for m in history)
        evidence = _evidence(qas["answers"][q], annotation)
        messages = history + [
            {"role": "user", "content": str(qas["question"][q]).strip()},
            {"role": "assistant", "content": answer},
        ]
        meta = {
            "paper_id": str(paper["id"]),
            "question_id": str(qas["question_id"][q]),
            "title": paper["title"],
            "answer_type": kind,
            "annotation_id": annotation,
            "history_chars": used,
            "chunks_kept": (len(history) - bool(self.system_prompt)) // 2,
            "chunks_total": len(chunks),
            "truncated": truncated,
            "evidence_in_history": all(e.strip() in text for e in evidence),
        }
        return {"id": f"{paper['id']}:{qas['question_id'][q]}", "messages": messages, "answer": answer, "meta": meta}

    def __repr__(self) -> str:
        return (
            f"QasperEpisodes(source={self.source!r}, split={self.split!r}, max_write_chars={self.max_write_chars}, "
            f"paragraphs_per_message={self.paragraphs_per_message})"
        )
