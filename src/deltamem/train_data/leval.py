"""L-Eval open-ended long-document QA (OpenLMLab/LEval; repo GPL-3.0, the underlying data keep their
licenses: Qasper CC BY 4.0, Natural Questions CC BY-SA 3.0) as memory episodes.

Each JSONL line is `{input, instructions[], outputs[], source, evaluation}`: one document and several
questions, instructions[i] answered by outputs[i]. The task is the file's stem (scientific_qa,
natural_question, multidoc_qa). An episode is one question: the document in message-sized chunks
(when it exceeds the budget, the window with the most words of the gold output), other documents of
the same task and split as distractors, the question, the reference answer. A document's id is a
hash of its text, so a document repeated on several lines is one document (one split).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .documents import Document, DocumentEpisodes, Question, chunk_spans, require_file


class LEvalEpisodes(DocumentEpisodes):
    """L-Eval questions over long documents. `paths`: the L-Eval JSONL files (one task each); the other
    options are those of `DocumentEpisodes`. Distractors come from the same task's documents."""

    source = "leval"
    default_instructions = (
        "Answer the question about what you have read in one or two sentences.\n\nQuestion: {question}",
        "Using the documents shared earlier, answer concisely.\n\nQuestion: {question}",
    )
    default_system_prompt = "You are a helpful assistant. Answer questions using the documents shared earlier."

    def __init__(self, paths: Sequence[str], **options: Any) -> None:
        super().__init__(**options)
        if isinstance(paths, str) or not paths:
            raise ValueError(f"paths must be a non-empty list of L-Eval JSONL files, got {paths!r}")
        self.paths = [str(p) for p in paths]

    def split_key(self, doc: Document) -> str:
        return f"leval/{doc.group}"

    def _read(self) -> tuple[list[Document], list[Question]]:
        docs: dict[str, Document] = {}
        questions: list[Question] = []
        for path in self.paths:
            file = require_file(path)
            task = Path(path).stem
            with file.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle):
                    if line.strip():
                        questions += self._line(line, number, file.name, task, docs)
        return list(docs.values()), questions

    def _line(self, line: str, number: int, name: str, task: str, docs: dict[str, Document]) -> list[Question]:
        where = f"{name}: document {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: bad JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key, kind in (("input", str), ("instructions", list), ("outputs", list)):
            if not isinstance(row.get(key), kind):
                raise ValueError(f"{where}: missing field {key!r} (a {kind.__name__})")
        text = row["input"]
        doc_id = f"{task}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        where = f"{name}: document {number} (id {doc_id})"
        if len(row["instructions"]) != len(row["outputs"]):
            raise ValueError(f"{where}: fields 'instructions' and 'outputs' differ in length")
        if doc_id not in docs:
            spans = chunk_spans(text, self.chunk_chars)
            if not spans:
                raise ValueError(f"{where}: field 'input' is empty")
            docs[doc_id] = Document(doc_id, "", tuple(text[s:e] for s, e in spans), group=task)
        questions = []
        for i, (question, output) in enumerate(zip(row["instructions"], row["outputs"])):
            if not isinstance(question, str) or not isinstance(output, str):
                raise ValueError(f"{where}, question {i}: 'instructions[{i}]' and 'outputs[{i}]' must be strings")
            if not question.strip() or not output.strip():
                continue
            questions.append(
                Question(
                    qid=f"{task}:{number}:{i}",
                    doc_id=doc_id,
                    text=question.strip(),
                    answer=output.strip(),
                    overlap_text=output,
                    evidence=output.strip(),
                    meta={"task": task, "evaluation": str(row.get("evaluation", ""))},
                )
            )
        return questions

    def __repr__(self) -> str:
        return f"LEvalEpisodes(paths={self.paths!r}, " + super().__repr__().split("(", 1)[1]
