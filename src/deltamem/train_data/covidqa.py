"""COVID-QA (deepset-ai/COVID-QA, Apache-2.0) as memory episodes: papers as history, one question.

The file is SQuAD-shaped: `data[].paragraphs[] = {context, document_id, qas[] = {question, id,
answers[{text, answer_start}], is_impossible}}`; one entry of `data` is one full paper (its
paragraphs joined). An episode is one answerable question: the paper cut into message-sized chunks
(a window around the answer's offset when the paper exceeds the budget) among other papers of the
same split, the question, and the extractive answer. The split is by paper.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .documents import Document, DocumentEpisodes, Question, chunk_spans, require_file


def _answer_span(context: str, text: str, start: int) -> tuple[int, int] | None:
    """(start, end) of the answer text in the context: at `answer_start`, else its nearest occurrence
    (the file's offsets are sometimes a few characters off)."""
    text = text.strip()
    if not text:
        return None
    if context[start : start + len(text)] == text:
        return start, start + len(text)
    hits = [m.start() for m in re.finditer(re.escape(text), context)]
    if not hits:
        return None
    best = min(hits, key=lambda h: abs(h - start))
    return best, best + len(text)


class CovidQAEpisodes(DocumentEpisodes):
    """COVID-QA questions over a history of papers. `path`: the SQuAD-format JSON file; the other
    options are those of `DocumentEpisodes` (split, seed, max_history_tokens, chunk_chars, ...)."""

    source = "covidqa"
    default_instructions = (
        "Answer the question about what you have read by quoting the relevant passage.\n\nQuestion: {question}",
        "Using the papers shared earlier, answer with the exact sentence or phrase.\n\nQuestion: {question}",
    )
    default_system_prompt = "You are a helpful assistant. Answer questions using the scientific papers shared earlier."

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = str(path)

    def _read(self) -> tuple[list[Document], list[Question]]:
        file = require_file(self.path)
        name = file.name
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: bad JSON: {exc.msg} (line {exc.lineno})") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
            raise ValueError(f"{name}: missing field 'data' (a list of papers)")
        docs, questions = [], []
        for p, paper in enumerate(data["data"]):
            doc, qs = self._paper(paper, p, name)
            docs.append(doc)
            questions += qs
        return docs, questions

    def _paper(self, paper: object, p: int, name: str) -> tuple[Document, list[Question]]:
        paras = paper.get("paragraphs") if isinstance(paper, Mapping) else None
        if not isinstance(paras, list) or not paras:
            raise ValueError(f"{name}: paper {p}: missing field 'paragraphs'")
        for k, para in enumerate(paras):
            for key in ("context", "document_id", "qas"):
                if not isinstance(para, Mapping) or key not in para:
                    raise ValueError(f"{name}: paper {p}, paragraph {k}: missing field {key!r}")
        doc_id = str(paras[0]["document_id"])
        where = f"{name}: paper {p} (id {doc_id})"
        context, offsets = "", []
        for para in paras:
            if not isinstance(para["context"], str):
                raise ValueError(f"{where}: field 'context' must be a string")
            offsets.append(len(context) + (2 if context else 0))
            context = f"{context}\n\n{para['context']}" if context else para["context"]
        spans = chunk_spans(context, self.chunk_chars)
        title = next((line.strip() for line in context.splitlines() if line.strip()), "")[:200]
        doc = Document(doc_id, title, tuple(context[s:e] for s, e in spans))
        questions = []
        for para, shift in zip(paras, offsets):
            for j, qa in enumerate(para["qas"]):
                q = self._question(qa, f"{where}, qa {j}", context, shift, spans, doc_id)
                if q is not None:
                    questions.append(q)
        return doc, questions

    def _question(
        self, qa: object, where: str, context: str, shift: int, spans: list[tuple[int, int]], doc_id: str
    ) -> Question | None:
        if not isinstance(qa, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(qa).__name__}")
        for key in ("question", "id", "answers"):
            if key not in qa:
                raise ValueError(f"{where}: missing field {key!r}")
        if qa.get("is_impossible") or not qa["answers"]:
            return None
        answer = qa["answers"][0]
        if not isinstance(answer, Mapping) or "text" not in answer or "answer_start" not in answer:
            raise ValueError(f"{where}: missing field 'answers[0].text' or 'answers[0].answer_start'")
        span = _answer_span(context, str(answer["text"]), shift + int(answer["answer_start"]))
        if span is None:
            raise ValueError(f"{where} (id {qa['id']}): field 'answers[0].text' is not in the paper's context")
        lo = next(i for i, (s, e) in enumerate(spans) if e > span[0])
        hi = next(i for i, (s, e) in enumerate(spans) if e >= span[1]) + 1
        text = context[span[0] : span[1]]
        return Question(
            qid=str(qa["id"]),
            doc_id=doc_id,
            text=str(qa["question"]).strip(),
            answer=text,
            anchor=(lo, max(hi, lo + 1)),
            evidence=text,
        )

    def __repr__(self) -> str:
        return f"CovidQAEpisodes(path={self.path!r}, " + super().__repr__().split("(", 1)[1]
