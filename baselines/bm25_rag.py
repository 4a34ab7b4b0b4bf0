"""BM25 retrieval-augmented generation: the history cut into chunks, the best chunks for each question in its prompt.

`memorize` chunks the history and indexes the chunks with `rank_bm25.BM25Okapi`; `answer` retrieves,
for each question, the top-`k` chunks for `Query.question` and prepends them to the prompt's last
user message as a block ``Relevant parts of the history:\\n<chunk>\\n\\n<chunk>...\\n\\n`` followed by
the message's own text (the question, and under `recent_window` the recent history the benchmark
put there). Nothing is inserted when no chunk shares a word with the question.

Chunking (`unit`):
* `message` — one chunk per history message (a synthetic chat turn; a whole LoCoMo session, since
  LoCoMo's history is one message per session);
* `turn` — LoCoMo session messages split into their turns, each chunk ``DATE: <session date>\\n<turn>``
  so dates stay answerable; any other message is one chunk, as under `message`;
* `passage` — one chunk per document of the history's structure (`History.passages`: HotpotQA's
  passage blocks, cut out of the message by their spans); a history without passages is an error;
* `tokens` — `History.text` cut into windows of `chunk_tokens` backbone tokens, consecutive windows
  sharing `overlap` tokens; a chunk is the exact text span of its window (needs a fast tokenizer's
  offsets, which every supported backbone has).
When the history mixes roles (user/assistant), `message`/`turn` chunks carry a ``User: `` /
``Assistant: `` label.

Scoring: BM25Okapi (`k1`, `b`, `epsilon` as in rank-bm25) over a simple tokenisation: lowercase,
words are maximal runs of ASCII letters and digits (``re.findall(r"[a-z0-9]+", text.lower())``), no
stemming, no stop-word list. Only chunks sharing at least one word with the question are candidates;
ties go to the earlier chunk. `order: score` puts the best chunk first, `chronological` keeps history
order.

Records: `Answer.extra` holds `retrieved_chunks` (chunk indices, prompt order), `retrieval_scores`,
and, when the history is LoCoMo's, `retrieved_dia_ids`: the dialog ids the retrieved chunks cover.
Turns, their dates and dialog ids come from the history's structure (`History.sessions`, built by the
LoCoMo loader: each session's message, date, and every turn's id and character span in that message),
never from parsing the rendered text. Ids printed in a chunk's text (``D3:7``) are recorded too. For
other histories no dialog ids exist and recall is not recorded. `evidence_recall` scores one question's retrieval
against LoCoMo's `evidence` (the runner stores it under `item_meta`); `retrieval_recall` averages it
over predictions rows.

Retrieval never changes the index: every question sees the memory as `memorize` left it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from evals.chat_method import ChatModelMethod
from evals.conditions import MEMORY_PROMPTS
from evals.methods import Answer, History, Query
from evals.types import Passage, Session

UNITS = ("message", "turn", "passage", "tokens")
ORDERS = ("score", "chronological")
BLOCK_HEADER = "Relevant parts of the history:"

_WORD = re.compile(r"[a-z0-9]+")
_DIA_ID = re.compile(r"\bD:?(\d+):(\d+)\b")


# ---------------------------------------------------------------------- shared by the textual baselines
def labelled(messages: Sequence[dict[str, str]]) -> bool:
    """Whether messages need role labels: the history mixes roles (a chat), unlike LoCoMo's user-only sessions."""
    return len({m.get("role") for m in messages}) > 1


def render_message(message: dict[str, str], with_role: bool) -> str:
    """A message's text, prefixed with ``User: `` / ``Assistant: `` when `with_role`."""
    if not with_role:
        return message["content"]
    return f"{str(message.get('role', 'user')).capitalize()}: {message['content']}"


def with_block(messages: Sequence[dict[str, str]], block: str) -> list[dict[str, str]]:
    """A copy of `messages` with `block` and a blank line prepended to the last user message's text."""
    out = [dict(m) for m in messages]
    for message in reversed(out):
        if message.get("role") == "user":
            message["content"] = f"{block}\n\n{message['content']}"
            return out
    return [*out, {"role": "user", "content": block}]


def normalise_dia_ids(values: Iterable[str]) -> list[str]:
    """``D<session>:<turn>`` ids in each string, deduplicated in order ("D8:6; D9:17" gives two, "D:11:26" one)."""
    out: list[str] = []
    for value in values:
        for session, turn in _DIA_ID.findall(str(value)):
            dia = f"D{int(session)}:{int(turn)}"
            if dia not in out:
                out.append(dia)
    return out


def evidence_recall(retrieved_dia_ids: Iterable[str], evidence: Iterable[str]) -> float:
    """Fraction of the question's evidence dialog ids among the retrieved ones; NaN when there is no evidence."""
    gold = set(normalise_dia_ids(evidence))
    if not gold:
        return math.nan
    return len(gold & set(normalise_dia_ids(retrieved_dia_ids))) / len(gold)


def retrieval_recall(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Mean `evidence_recall` over predictions rows that have retrieved dia ids and non-empty evidence."""
    values = []
    for row in rows:
        retrieved = (row.get("extra") or {}).get("retrieved_dia_ids")
        evidence = (row.get("item_meta") or {}).get("evidence")
        if retrieved is None or not evidence:
            continue
        value = evidence_recall(retrieved, evidence)
        if not math.isnan(value):
            values.append(value)
    return {"evidence_recall": sum(values) / len(values) if values else math.nan, "n": len(values)}


# ---------------------------------------------------------------------- chunking
@dataclass
class Chunk:
    body: str  # the history text it holds
    message: int  # index of the history message it starts in
    dia_ids: list[str] = field(default_factory=list)  # LoCoMo dialog ids it covers (empty elsewhere)
    date: str = ""  # a LoCoMo turn's session date, indexed with it ("" elsewhere)

    @property
    def text(self) -> str:
        """What is indexed and shown: the body, after a ``DATE: <date>`` line when the chunk has a date."""
        return f"DATE: {self.date}\n{self.body}" if self.date else self.body


def session_of_message(sessions: Sequence[Session]) -> dict[int, Session]:
    """The structured session each history message holds, by message index."""
    return {session.message: session for session in sessions}


def chunk_history(
    messages: Sequence[dict[str, str]],
    unit: str = "turn",
    tokenizer: Any = None,
    chunk_tokens: int = 256,
    overlap: int = 32,
    sessions: Sequence[Session] = (),
    passages: Sequence[Passage] = (),
) -> list[Chunk]:
    """The history's chunks under `unit` (see the module docstring), oldest first; `sessions` and
    `passages` are the history's structure (`History.sessions` / `.passages`), empty where it has none."""
    if unit not in UNITS:
        raise ValueError(f"unknown chunk unit {unit!r}; expected one of {UNITS}")
    if unit == "passage":
        if not passages:
            raise ValueError("unit=passage needs a history with passages (History.passages: HotpotQA's); "
                             "use unit=message or tokens for this benchmark")
        return [Chunk(messages[p.message]["content"][p.span[0] : p.span[1]], p.message) for p in passages]
    with_role = labelled(messages)
    by_message = session_of_message(sessions)
    chunks: list[Chunk] = []
    if unit in ("message", "turn"):
        for index, message in enumerate(messages):
            content, session = message["content"], by_message.get(index)
            if unit == "turn" and session is not None:
                for turn in session.turns:
                    body = content[turn.span[0] : turn.span[1]]
                    dia_ids = normalise_dia_ids([turn.turn_id, *_printed_ids(body)])
                    chunks.append(Chunk(body, index, dia_ids, session.date))
            else:
                ids = [turn.turn_id for turn in session.turns] if session is not None else []
                chunks.append(
                    Chunk(render_message(message, with_role), index, normalise_dia_ids([*ids, *_printed_ids(content)]))
                )
        return [c for c in chunks if c.text.strip()]
    return _token_windows(messages, by_message, tokenizer, chunk_tokens, overlap)


def _printed_ids(text: str) -> list[str]:
    """Dialog ids printed in the text itself (none in LoCoMo's own rendering)."""
    return [f"D{s}:{t}" for s, t in _DIA_ID.findall(text)]


def _token_windows(
    messages: Sequence[dict[str, str]],
    by_message: dict[int, Session],
    tokenizer: Any,
    chunk_tokens: int,
    overlap: int,
) -> list[Chunk]:
    if tokenizer is None:
        raise ValueError("unit=tokens needs the backbone tokenizer")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("unit=tokens needs a fast tokenizer (character offsets); use unit=message or turn")
    text = History("", [dict(m) for m in messages]).text
    starts, spans, position = [], [], 0  # message start offsets; (start, end, dia id) of every LoCoMo turn
    for index, message in enumerate(messages):
        starts.append(position)
        if (session := by_message.get(index)) is not None:
            spans += [(position + t.span[0], position + t.span[1], t.turn_id) for t in session.turns]
        position += len(message["content"]) + 2  # "\n\n" between messages
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    step = chunk_tokens - overlap
    chunks = []
    for first in range(0, len(offsets), step):
        last = min(first + chunk_tokens, len(offsets))
        a, b = offsets[first][0], offsets[last - 1][1]
        message = max(i for i, s in enumerate(starts) if s <= a) if starts else 0
        dia = [d for s, e, d in spans if s < b and e > a] + _printed_ids(text[a:b])
        chunks.append(Chunk(text[a:b], message, normalise_dia_ids(dia)))
        if last == len(offsets):
            break
    return [c for c in chunks if c.text.strip()]


# ---------------------------------------------------------------------- retrieval
def bm25_tokenize(text: str) -> list[str]:
    """Lowercase words of ASCII letters and digits: the tokenisation BM25 indexes and queries with."""
    return _WORD.findall(text.lower())


class BM25Index:
    """BM25Okapi over chunk texts; `top` ranks the chunks sharing a word with the query."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        from rank_bm25 import BM25Okapi

        self.docs = [bm25_tokenize(t) for t in texts]
        self.vocab = [set(d) for d in self.docs]
        self.bm25 = BM25Okapi(self.docs, k1=k1, b=b, epsilon=epsilon) if any(self.docs) else None

    def __len__(self) -> int:
        return len(self.docs)

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        """Up to `k` (chunk index, score) pairs, best first, ties to the earlier chunk."""
        words = bm25_tokenize(query)
        if self.bm25 is None or not words or k <= 0:
            return []
        scores = self.bm25.get_scores(words)
        asked = set(words)
        candidates = [i for i, vocab in enumerate(self.vocab) if vocab & asked]
        ranked = sorted(candidates, key=lambda i: (-float(scores[i]), i))[:k]
        return [(i, float(scores[i])) for i in ranked]


@dataclass
class Retrieval:
    chunks: list[int]  # prompt order
    scores: list[float]
    dia_ids: list[str]


class BM25RAG(ChatModelMethod):
    """The frozen backbone with BM25-retrieved history chunks in each prompt (config `method=bm25_rag`)."""

    name = "bm25_rag"
    conditions: tuple[str, ...] = MEMORY_PROMPTS

    def __init__(
        self,
        loaded: Any,
        unit: str = "turn",
        chunk_tokens: int = 256,
        overlap: int = 32,
        k: int = 10,
        order: str = "score",
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        prefill_chunk: int = 4096,
        name: str | None = None,
    ):
        if unit not in UNITS:
            raise ValueError(f"unknown chunk unit {unit!r}; expected one of {UNITS}")
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; expected one of {ORDERS}")
        if unit == "tokens" and not 0 <= overlap < chunk_tokens:
            raise ValueError(
                f"overlap must be in [0, chunk_tokens): got overlap={overlap}, chunk_tokens={chunk_tokens}"
            )
        super().__init__(loaded, batch_size, max_context_tokens, prefill_chunk, name)
        self.unit, self.order, self.k = unit, order, int(k)
        self.chunk_tokens, self.overlap = int(chunk_tokens), int(overlap)
        self.bm25_params = {"k1": float(k1), "b": float(b), "epsilon": float(epsilon)}
        self.chunks: list[Chunk] = []
        self.index: BM25Index | None = None
        self._pending: dict[int, Retrieval] = {}
        self._contexts = 0  # running counters for cost(); reset() keeps them
        self._chunk_count = 0

    # ----------------------------------------------------------------- the interface
    def memorize(self, history: History) -> None:
        self.decoder.forget_prefix()
        self.chunks = chunk_history(
            history.messages, self.unit, self.tokenizer, self.chunk_tokens, self.overlap, history.sessions,
            history.passages,
        )
        self.index = BM25Index([c.text for c in self.chunks], **self.bm25_params)
        self._contexts += 1
        self._chunk_count += len(self.chunks)

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        retrievals = [self.retrieve(q.question) for q in queries]
        self._pending = {id(q): r for q, r in zip(queries, retrievals)}
        try:
            answers = super().answer(queries)
        finally:
            self._pending = {}
        for answer, retrieval in zip(answers, retrievals):
            answer.extra["retrieved_chunks"] = retrieval.chunks
            answer.extra["retrieval_scores"] = [round(s, 4) for s in retrieval.scores]
            if any(c.dia_ids for c in self.chunks):  # a LoCoMo history: recall against `evidence` is possible
                answer.extra["retrieved_dia_ids"] = retrieval.dia_ids
        return answers

    def reset(self) -> None:
        super().reset()
        self.chunks, self.index, self._pending = [], None, {}

    def cost(self) -> dict[str, Any]:
        return {
            "extra_trainable_params": 0,
            "unit": self.unit,
            "k": self.k,
            "chunks_per_context_mean": round(self._chunk_count / self._contexts, 2) if self._contexts else 0.0,
        }

    # ----------------------------------------------------------------- retrieval and prompts
    def retrieve(self, question: str) -> Retrieval:
        """The top-`k` chunks for `question`, in prompt order (see `order`)."""
        ranked = self.index.top(question, self.k) if self.index is not None else []
        if self.order == "chronological":
            ranked = sorted(ranked)
        dia_ids = normalise_dia_ids(d for i, _ in ranked for d in self.chunks[i].dia_ids)
        return Retrieval([i for i, _ in ranked], [s for _, s in ranked], dia_ids)

    def prompt_messages(self, query: Query) -> list[dict[str, str]]:
        retrieval = self._pending.get(id(query)) or self.retrieve(query.question)
        if not retrieval.chunks:
            return query.messages
        block = BLOCK_HEADER + "\n" + "\n\n".join(self.chunks[i].text for i in retrieval.chunks)
        return with_block(query.messages, block)
