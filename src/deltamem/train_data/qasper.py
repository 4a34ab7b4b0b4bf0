"""Qasper papers as memory episodes, built from the raw dataset: read the paper, answer one question.

`source` is a hub dataset id (default `allenai/qasper`, read through its parquet conversion,
`revision="refs/convert/parquet"`: `datasets` >= 4 refuses the repo's loading script) or a local file
in either schema, normalised to one internal `Paper`:

* raw AllenAI JSON (`qasper-train-v0.3.json`): a dict keyed by paper id, `{paper_id: {title, abstract,
  full_text: [{section_name, paragraphs: [str]}], qas: [{question, question_id, answers: [{answer:
  {unanswerable, extractive_spans, yes_no, free_form_answer, evidence, highlighted_evidence},
  annotation_id, worker_id}]}]}}`;
* HF rows (a JSON list, or a .parquet file of the conversion): `id, title, abstract, full_text:
  {section_name: [str], paragraphs: [[str]]}, qas: {question: [str], question_id: [str], answers:
  [{answer: [{...}], annotation_id: [str], worker_id: [str]}]}`.

The history is the whole paper; the episode builder keeps its last `training.max_write_length` tokens
(tail truncation, as the paper does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .hub_chats import load_hub_split

ACKS = ["Got it.", "Noted, please continue.", "Understood.", "Okay, I have read that part."]
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. You have read a research paper shared earlier in the "
    "conversation; answer questions about it concisely."
)
PARQUET_REVISION = "refs/convert/parquet"


@dataclass(frozen=True)
class Question:
    """One question and its annotators' answers, as (annotation id, answer dict) in order."""

    id: str
    text: str
    annotations: tuple[tuple[str, Mapping], ...]


@dataclass(frozen=True)
class Paper:
    """A Qasper paper in the one internal form both schemas normalise to."""

    id: str
    title: str
    abstract: str
    sections: tuple[tuple[str, tuple[str, ...]], ...]  # (section name, paragraphs)
    questions: tuple[Question, ...]


def _field(node: object, path: str, where: str, prefix: str = "") -> object:
    """`node[a][b]...` for path "a.b...", or a ValueError naming the missing field `prefix + path`."""
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(f"{where} is missing field {prefix + path!r}")
        node = node[part]
    return node


def _list(value: object, name: str, where: str) -> list:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ValueError(f"{where}: field {name!r} must be a list, got {type(value).__name__}")
    return list(value)


def _answer(ans: object, name: str, where: str) -> Mapping:
    if not isinstance(ans, Mapping):
        raise ValueError(f"{where} is missing field {name!r} (an answer object)")
    return ans


def paper_from_hf_row(row: object, index: int, where: str) -> Paper:
    """Normalise one HF row (columnar `full_text` and `qas`)."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: paper {index} is a {type(row).__name__}, expected an object")
    at = f"{where}: paper {index} (id {row.get('id', '?')!r})"
    paper_id, title, abstract = (_field(row, f, at) for f in ("id", "title", "abstract"))
    names = _list(_field(row, "full_text.section_name", at), "full_text.section_name", at)
    paragraphs = _list(_field(row, "full_text.paragraphs", at), "full_text.paragraphs", at)
    questions = _list(_field(row, "qas.question", at), "qas.question", at)
    question_ids = _list(_field(row, "qas.question_id", at), "qas.question_id", at)
    answers = _list(_field(row, "qas.answers", at), "qas.answers", at)
    if len(names) != len(paragraphs):
        raise ValueError(f"{at}: full_text.section_name and full_text.paragraphs differ in length")
    if not len(questions) == len(question_ids) == len(answers):
        raise ValueError(f"{at}: qas.question, qas.question_id and qas.answers differ in length")
    parsed = []
    for k, (text, qid, entry) in enumerate(zip(questions, question_ids, answers)):
        name = f"qas.answers[{k}].answer"
        given = _list(_field(entry, "answer", at, f"qas.answers[{k}]."), name, at)
        ids = list(entry.get("annotation_id") or [])
        annotations = tuple(
            (str(ids[j]) if j < len(ids) else str(j), _answer(a, f"{name}[{j}]", at)) for j, a in enumerate(given)
        )
        parsed.append(Question(str(qid), str(text), annotations))
    sections = tuple(
        (str(n or ""), tuple(_list(p, f"full_text.paragraphs[{s}]", at)))
        for s, (n, p) in enumerate(zip(names, paragraphs))
    )
    return Paper(str(paper_id), str(title), str(abstract), sections, tuple(parsed))


def paper_from_raw(paper_id: str, obj: object, where: str) -> Paper:
    """Normalise one paper of the raw AllenAI JSON (lists of section and question objects)."""
    at = f"{where}: paper {paper_id!r}"
    if not isinstance(obj, Mapping):
        raise ValueError(f"{at} is a {type(obj).__name__}, expected an object")
    title, abstract = _field(obj, "title", at), _field(obj, "abstract", at)
    sections = []
    for s, section in enumerate(_list(_field(obj, "full_text", at), "full_text", at)):
        name = _field(section, "section_name", at, f"full_text[{s}].")
        paras = _list(_field(section, "paragraphs", at, f"full_text[{s}]."), f"full_text[{s}].paragraphs", at)
        sections.append((str(name or ""), tuple(paras)))
    questions = []
    for k, qa in enumerate(_list(_field(obj, "qas", at), "qas", at)):
        text, qid = (_field(qa, f, at, f"qas[{k}].") for f in ("question", "question_id"))
        entries = _list(_field(qa, "answers", at, f"qas[{k}]."), f"qas[{k}].answers", at)
        annotations = []
        for j, entry in enumerate(entries):
            ans = _answer(_field(entry, "answer", at, f"qas[{k}].answers[{j}]."), f"qas[{k}].answers[{j}].answer", at)
            annotations.append((str(entry.get("annotation_id", j)), ans))
        questions.append(Question(str(qid), str(text), tuple(annotations)))
    return Paper(str(paper_id), str(title), str(abstract), tuple(sections), tuple(questions))


def choose_answer(annotations: Sequence[tuple[str, Mapping]]) -> tuple[str, str, str] | None:
    """(answer text, kind, annotation id) for one question's annotations, or None if unanswerable.

    Annotators in order; skip one marked unanswerable; else its free-form answer if non-empty, else its
    extractive spans joined with ", ", else "Yes"/"No" from `yes_no`; one with none of these is skipped.
    """
    for annotation, ans in annotations:
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


def _is_local(source: str) -> bool:
    return os.path.exists(source) or source.endswith((".json", ".parquet", "/")) or source.startswith((".", "/"))


def load_papers(source: str, split: str = "train", revision: str | None = PARQUET_REVISION) -> list[Paper]:
    """All papers of `source` (a hub id, or a local raw-JSON / HF-rows JSON / parquet file), normalised."""
    if not _is_local(source):
        alternative = "pass source=<a local raw AllenAI JSON, HF-rows JSON or parquet file> instead"
        rows = load_hub_split(source, split, revision, alternative)
        return [paper_from_hf_row(rows[i], i, f"{source}[{split}]") for i in range(len(rows))]
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Qasper source {source!r}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        data: object = pq.read_table(path).to_pylist()
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: bad JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, Mapping):  # raw AllenAI: keyed by paper id
        return [paper_from_raw(str(pid), obj, source) for pid, obj in data.items()]
    if isinstance(data, list):
        return [paper_from_hf_row(row, i, source) for i, row in enumerate(data)]
    kind = type(data).__name__
    raise ValueError(f"{source}: expected a dict keyed by paper id (raw) or a list of HF rows, got {kind}")


class QasperRawEpisodes:
    """One episode per answerable Qasper question: the whole paper as history, the question, the answer.

    History: a user message with title and abstract, then the sections' paragraphs (each section's first
    paragraph headed by its name) in user messages of `paragraphs_per_message` paragraphs, each followed
    by a short assistant acknowledgement. Construction is free: the data loads on first access.
    """

    def __init__(
        self,
        source: str = "allenai/qasper",
        split: str = "train",
        revision: str | None = PARQUET_REVISION,
        paragraphs_per_message: int = 4,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        if int(paragraphs_per_message) < 1:
            raise ValueError(f"paragraphs_per_message must be >= 1, got {paragraphs_per_message}")
        self.source, self.split, self.system_prompt = str(source), str(split), system_prompt
        self.revision = None if revision is None else str(revision)
        self.paragraphs_per_message = int(paragraphs_per_message)
        self._papers: list[Paper] | None = None
        self._index: list[tuple[int, int, str, str, str]] | None = None

    def _build(self) -> list[tuple[int, int, str, str, str]]:
        if self._index is None:
            papers = load_papers(self.source, self.split, self.revision)
            index = []
            for p, paper in enumerate(papers):
                for q, question in enumerate(paper.questions):
                    chosen = choose_answer(question.annotations)
                    if chosen is not None:
                        index.append((p, q, *chosen))
            self._papers, self._index = papers, index
        return self._index

    def __len__(self) -> int:
        return len(self._build())

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def chunks(self, paper: Paper) -> list[str]:
        """The user messages of the history: title and abstract, then the paragraphs in groups."""
        paragraphs = []
        for name, paras in paper.sections:
            kept = [t.strip() for t in paras if t and t.strip()]
            if kept and name:
                kept[0] = f"## {name}\n{kept[0]}"
            paragraphs += kept
        head = f"Here is a research paper.\n\nTitle: {paper.title}\n\nAbstract: {paper.abstract.strip()}"
        step = self.paragraphs_per_message
        return [head] + ["\n\n".join(paragraphs[i : i + step]) for i in range(0, len(paragraphs), step)]

    def __getitem__(self, i: int) -> dict:
        index = self._build()
        if not -len(index) <= i < len(index):
            raise IndexError(f"episode {i} out of range for {len(index)} episodes")
        p, q, answer, kind, annotation = index[i]
        paper = self._papers[p]
        question = paper.questions[q]
        history = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        chunks = self.chunks(paper)
        for c, chunk in enumerate(chunks):
            history += [{"role": "user", "content": chunk}, {"role": "assistant", "content": ACKS[c % len(ACKS)]}]
        text = "\n".join(m["content"] for m in history)
        evidence = next((a.get("evidence") or [] for a_id, a in question.annotations if a_id == annotation), [])
        messages = history + [
            {"role": "user", "content": question.text.strip()},
            {"role": "assistant", "content": answer},
        ]
        meta = {
            "paper_id": paper.id,
            "question_id": question.id,
            "title": paper.title,
            "answer_type": kind,
            "annotation_id": annotation,
            "history_chars": sum(len(m["content"]) for m in history),
            "chunks": len(chunks),
            "evidence_in_history": all(e.strip() in text for e in evidence if e),
        }
        return {"id": f"{paper.id}:{question.id}", "messages": messages, "answer": answer, "meta": meta}

    def __repr__(self) -> str:
        return (
            f"QasperRawEpisodes(source={self.source!r}, split={self.split!r}, revision={self.revision!r}, "
            f"paragraphs_per_message={self.paragraphs_per_message})"
        )
