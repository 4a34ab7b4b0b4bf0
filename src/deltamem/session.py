"""One user's δ-mem memory across conversations: `MemorySession`, and `SessionManager` for many users.

A session follows the layout the memory was trained on (`EpisodeBuilder`): history goes into the
state, and the current question is read with writes off. One turn therefore does two things:
1. answer the user's message from the state, with no write;
2. write the (user, assistant) pair into the state, as history for later turns.

How the writes are done:
* Every write continues the rendered chat where the last one stopped. The new messages are rendered
  after a one-message anchor with the last written role, and the anchor's tokens are dropped. So a
  conversation written turn by turn gives the same tokens as writing it whole (checked, or refused).
* A write longer than `window` tokens runs in chunks of `window`, each from position 0, with the
  state carried from chunk to chunk (`DeltaMemModel.write_history`).
* SSW takes its segments from messages or sentences, as `memory.segment_unit` says.

Answers are greedy, from `GraphDecoder` (CUDA graphs on a GPU), and stream one token at a time.
`SessionManager` keeps every user's state in a `StateStore`. The model holds one state at a time,
so one lock guards it. A second lock per user serialises one user's turns. Different users'
requests interleave turn by turn and never share a state.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from .attach import DeltaMemModel
from .episodes import EpisodeBuilder
from .errors import UserError
from .graph_decode import GraphDecoder
from .state import MemoryState
from .state_store import SessionMeta, StateStore, check_user_id


class SessionError(UserError, ValueError):
    """A turn that cannot be taken as given: an empty message, or a question longer than the window."""


@dataclass
class Turn:
    answer: str
    prompt_tokens: int
    answer_tokens: int
    tokens_written: int
    seconds: float


class MemorySession:
    """One user's state over a model with its adapter loaded.

    model: the δ-mem model; builder: the tokenizer's chat layout; meta: what the store records;
    state: the saved state (batch 1), or None for an empty memory; window: the most tokens per forward
    call (writes are chunked to it, and question + answer must fit it); system: an optional system
    message, rendered before the first write and before every question.
    """

    def __init__(
        self,
        model: DeltaMemModel,
        builder: EpisodeBuilder,
        meta: SessionMeta,
        state: MemoryState | None = None,
        window: int = 4096,
        system: str | None = None,
        decoder: GraphDecoder | None = None,
        recent_turns: int = 0,
    ):
        self.model, self.builder, self.meta, self.window = model, builder, meta, int(window)
        self.recent_turns = int(recent_turns)
        self.system = [{"role": "system", "content": system}] if system else []
        self.decoder = decoder if decoder is not None else GraphDecoder(model)
        self.device = next(model.parameters()).device
        self.state = None if state is None else state.to(self.device)
        self._last_counts = (0, 0)  # (prompt, answer) tokens of the last answer

    # ------------------------------------------------------------------ writing
    def continuation_tokens(self, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
        """The tokens (and SSW segment ids) that continue the written chat with `messages`."""
        unit = self.model.memory_config.segment_unit
        pick = (lambda parts: parts[1]) if unit == "message" else (lambda parts: parts[2])  # noqa: E731
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self.meta.last_role is None:  # the first write carries the template's preamble
            parts = self.builder.write_part(self.system, messages)
            return parts[0], pick(parts)
        anchor = [{"role": self.meta.last_role, "content": "."}]
        before = self.builder.write_part(self.system, anchor)
        parts = self.builder.write_part(self.system, anchor + messages)
        n = len(before[0])
        if parts[0][:n] != before[0]:
            raise SessionError(
                "this chat template does not render a message the same way whatever follows it, so a chat "
                "cannot be continued turn by turn; write it whole instead"
            )
        return parts[0][n:], pick(parts)[n:]

    @torch.no_grad()
    def write(self, messages: Sequence[dict[str, str]]) -> int:
        """Write `messages` into the state (chunked to the window); the number of tokens written."""
        if not messages:
            return 0
        ids, segments = self.continuation_tokens(messages)
        if ids:
            self._load_into_model()
            tokens = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, T)
            segs = torch.tensor([segments], dtype=torch.long, device=self.device)  # (1, T)
            needs_segments = self.model.memory_config.strategy.needs_segments
            self.model.write_history(tokens, None, segs if needs_segments else None, chunk_size=self.window)
            self.state = self.model.get_state().clone()
        self.meta.tokens_written += len(ids)
        self.meta.messages_written += len(messages)
        self.meta.last_role = messages[-1]["role"]
        self.meta.updated = time.time()
        return len(ids)

    # ------------------------------------------------------------------ reading
    def prompt_tokens(self, question: str) -> list[int]:
        recent = self.meta.recent[-2 * self.recent_turns :] if self.recent_turns else []
        shown = self.system + recent + [{"role": "user", "content": question}]
        text = self.builder.render(shown, generation_prompt=True)
        return self.builder.tokenize(text)[0]

    @torch.no_grad()
    def stream_answer(self, question: str, max_new_tokens: int = 256) -> Iterator[str]:
        """The answer to `question` from the state (no write), as text pieces while it decodes."""
        if not question.strip():
            raise SessionError("the message is empty")
        prompt = self.prompt_tokens(question)
        if len(prompt) + max_new_tokens > self.window:
            raise SessionError(
                f"the message has {len(prompt)} tokens; with {max_new_tokens} new tokens it exceeds the "
                f"{self.window}-token window (a long text can be written to memory instead)"
            )
        self._load_into_model()
        tokenizer = self.builder.tokenizer
        ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        produced: list[int] = []
        shown = ""
        for token in self.decoder.stream(ids, max_new_tokens, eos_token_id=self.builder.end_of_turn, write=False):
            produced.append(token)
            text = tokenizer.decode(produced, skip_special_tokens=True)
            if len(text) > len(shown) and not text.endswith("\ufffd"):  # whole characters only
                yield text[len(shown) :]
                shown = text
        self._load_into_model()  # unpins the decoder's copy: later writes start from the session's state
        self._last_counts = (len(prompt), len(produced))

    def answer(self, question: str, max_new_tokens: int = 256) -> str:
        return "".join(self.stream_answer(question, max_new_tokens))

    def turn(self, message: str, max_new_tokens: int = 256, on_text: Callable[[str], None] | None = None) -> Turn:
        """Answer `message` from memory, then write the exchange into memory."""
        started = time.perf_counter()
        pieces = []
        for piece in self.stream_answer(message, max_new_tokens):
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)
        answer = "".join(pieces).strip()
        exchange = [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]
        written = self.write(exchange)
        self.meta.turns += 1
        if self.recent_turns:  # the last turns also stay in the prompt (off by default)
            self.meta.recent = (self.meta.recent + exchange)[-2 * self.recent_turns :]
        prompt_tokens, answer_tokens = self._last_counts
        return Turn(answer, prompt_tokens, answer_tokens, written, time.perf_counter() - started)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything written in this session (the store keeps its copy until saved)."""
        self.state = None
        self.meta.turns = self.meta.tokens_written = self.meta.messages_written = 0
        self.meta.last_role, self.meta.recent = None, []
        self.meta.updated = time.time()

    def stats(self) -> dict[str, Any]:
        return session_stats(self.meta, self.state)

    def _load_into_model(self) -> None:
        if self.state is None:
            self.model.reset_state()
        else:
            self.model.set_state(self.state)


class SessionManager:
    """Every user's session over one model: loads from and saves to a `StateStore`."""

    def __init__(
        self,
        model: DeltaMemModel,
        builder: EpisodeBuilder,
        store: StateStore,
        adapter_sha256: str,
        backbone: str,
        window: int = 4096,
        system: str | None = None,
        recent_turns: int = 0,
    ):
        self.model, self.builder, self.store = model, builder, store
        self.adapter_sha256, self.backbone = adapter_sha256, backbone
        self.window, self.system, self.recent_turns = window, system, recent_turns
        self.decoder = GraphDecoder(model)
        self.model_lock = threading.Lock()  # the model holds one state at a time
        self._user_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def user_lock(self, user: str) -> threading.Lock:
        check_user_id(user)
        with self._guard:
            return self._user_locks.setdefault(user, threading.Lock())

    def open(self, user: str) -> MemorySession:
        """The user's session as saved (or empty); refuses a state of another adapter or backbone."""
        saved = self.store.load(user, self.adapter_sha256, self.backbone)
        state, meta = saved if saved is not None else (None, SessionMeta(user, self.adapter_sha256, self.backbone))
        return MemorySession(
            self.model, self.builder, meta, state, self.window, self.system, self.decoder, self.recent_turns
        )

    def save(self, session: MemorySession) -> None:
        if session.state is None:
            self.store.delete(session.meta.user)
            return
        self.store.save(session.state, session.meta)

    def chat(self, user: str, message: str, max_new_tokens: int = 256) -> Turn:
        """One turn for `user`, saved before it returns."""
        with self.user_lock(user), self.model_lock:
            session = self.open(user)
            turn = session.turn(message, max_new_tokens)
            self.save(session)
        return turn

    def stats(self, user: str) -> dict[str, Any] | None:
        with self.user_lock(user):
            saved = self.store.load(user, self.adapter_sha256, self.backbone)
        if saved is None:
            return None
        state, meta = saved
        return {**session_stats(meta, state), "created": meta.created, "updated": meta.updated}

    def forget(self, user: str) -> bool:
        with self.user_lock(user):
            return self.store.delete(user)


def session_stats(meta: SessionMeta, state: MemoryState | None) -> dict[str, Any]:
    """What `/stats` and `GET /v1/memory/{user}` show: counts, the state's size and its identity."""
    return {"user": meta.user, "turns": meta.turns, "tokens_written": meta.tokens_written,
            "messages_written": meta.messages_written, "state_bytes": 0 if state is None else state.nbytes(),
            "adapter_sha256": meta.adapter_sha256, "backbone": meta.backbone}


__all__ = ["MemorySession", "SessionError", "SessionManager", "Turn", "session_stats"]
