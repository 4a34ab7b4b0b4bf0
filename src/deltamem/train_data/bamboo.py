"""BAMBOO altqa (RUCAIBox/BAMBOO, MIT) as memory episodes: numeric answers only the document holds.

Each JSONL line is `{content, answer}`; `content` is an instruction, then "Document:\\n<text>" and
"Question:\\n<question>" in either order. The numbers in the documents were altered, so the answer
must come from the document, not from the model's knowledge. An episode: the document in chunks
(when it exceeds the budget, a window holding the answer number, best matching the question; else
the window with the most question and answer words), other documents of the same split as
distractors, the question, the number. A document's id is a hash of its text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from .documents import Document, DocumentEpisodes, Question, chunk_spans, require_file

_DOC, _QUESTION = "Document:\n", "Question:\n"


def parse_content(content: str) -> tuple[str, str]:
    """(document, question) of one `content` field; ValueError naming the missing marker."""
    d, q = content.find(_DOC), content.find(_QUESTION)
    if d < 0:
        raise ValueError("no 'Document:' marker")
    if q < 0:
        raise ValueError("no 'Question:' marker")
    if q < d:
        question, document = content[q + len(_QUESTION) : d], content[d + len(_DOC) :]
    else:
        q = content.rfind("\n" + _QUESTION)
        if q < d:
            raise ValueError("no 'Question:' marker after the document")
        document, question = content[d + len(_DOC) : q], content[q + 1 + len(_QUESTION) :]
    if not document.strip() or not question.strip():
        raise ValueError("empty document or question")
    return document.strip(), " ".join(question.split())


def number_pattern(answer: str) -> re.Pattern[str]:
    """Whole-number match of the answer (no digit or decimal point glued to either side)."""
    return re.compile(r"(?<![\d.])" + re.escape(answer) + r"(?![\d]|\.\d)")


class BambooEpisodes(DocumentEpisodes):
    """BAMBOO altqa questions over Wikipedia documents. `path`: the JSONL file; the other options are
    those of `DocumentEpisodes`."""

    source = "bamboo"
    default_instructions = (
        "Answer the question about what you have read with a number only.\n\nQuestion: {question}",
        "Using only the documents shared earlier (not what you know), answer with a number.\n\nQuestion: {question}",
    )
    default_system_prompt = "You are a helpful assistant. Answer from the documents shared earlier, not from memory."

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = str(path)

    def _read(self) -> tuple[list[Document], list[Question]]:
        file = require_file(self.path)
        docs: dict[str, Document] = {}
        questions = []
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                if line.strip():
                    questions.append(self._line(line, number, file.name, docs))
        return list(docs.values()), questions

    def _line(self, line: str, number: int, name: str, docs: dict[str, Document]) -> Question:
        where = f"{name}: record {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: bad JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key in ("content", "answer"):
            if not isinstance(row.get(key), (str, int, float)) or not str(row[key]).strip():
                raise ValueError(f"{where}: missing field {key!r}")
        try:
            text, question = parse_content(str(row["content"]))
        except ValueError as exc:
            raise ValueError(f"{where}: field 'content': {exc}") from None
        doc_id = hashlib.sha256(text.encode()).hexdigest()[:12]
        if doc_id not in docs:
            spans = chunk_spans(text, self.chunk_chars)
            docs[doc_id] = Document(doc_id, "", tuple(text[s:e] for s, e in spans))
        answer = str(row["answer"]).strip()
        pattern = number_pattern(answer)
        hits = tuple(i for i, piece in enumerate(docs[doc_id].pieces) if pattern.search(piece))
        return Question(
            qid=str(number),
            doc_id=doc_id,
            text=question,
            answer=answer,
            candidates=hits,
            overlap_text=question if hits else f"{question} {answer}",
            evidence=answer,
            meta={"answer_found": bool(hits)},
        )

    def evidence_in(self, q: Question, kept: str) -> bool:
        return bool(number_pattern(q.answer).search(kept))

    def __repr__(self) -> str:
        return f"BambooEpisodes(path={self.path!r}, " + super().__repr__().split("(", 1)[1]
