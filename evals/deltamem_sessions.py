"""δ-mem fed one session at a time (config `method=deltamem_sessions`): the multi-session check of
the persistent memory (deltamem/session.py).

For each context, `memorize` opens the context's `MemorySession` from a `StateStore`. It writes
one history message (a LoCoMo session), saves the state and drops the session, then opens it
again from disk for the next message. The questions are then answered from the state as
reloaded after the last session, through the same decoder as `method=deltamem`. Its answers must
equal `method=deltamem method.write_chunks=messages`, the same conversation written in one process
with a write call per session (tests/test_deltamem_sessions.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

from deltamem.adapters import adapter_sha256
from deltamem.session import SessionManager
from deltamem.state import MemoryState
from deltamem.state_store import StateStore

from .deltamem_method import DeltaMemMethod
from .methods import History


class DeltaMemSessionsMethod(DeltaMemMethod):
    """`method=deltamem` whose histories go through saved and reloaded memory sessions."""

    def __init__(self, loaded: Any, store: str, name: str | None = None, **kwargs: Any):
        if kwargs.setdefault("write_chunks", "messages") != "messages":
            raise ValueError("method=deltamem_sessions writes a call per message: write_chunks must be messages")
        super().__init__(loaded, name=name or "deltamem_sessions", **kwargs)
        self.sessions = SessionManager(
            self.memory_model, self.builder, StateStore(Path(store)), adapter_sha256(self.adapter) or "untrained",
            loaded.spec.name, window=self.write_chunk_size,
        )
        self.session_writes = 0  # sessions written (one save and one reload each)

    def memorize(self, history: History) -> None:
        self.reset()
        self._keep(self._through_sessions(history))

    def memorize_many(self, histories: Sequence[History]) -> None:
        self.reset()
        if len({h.context_id for h in histories}) != len(histories):
            raise ValueError("memorize_many got two histories with the same context id")
        states = [self._through_sessions(h) for h in histories]
        self._keep(MemoryState.cat(states), {h.context_id: row for row, h in enumerate(histories)})

    def _through_sessions(self, history: History) -> MemoryState:
        user = "ctx-" + hashlib.sha256(history.context_id.encode()).hexdigest()[:24]  # a safe file name
        self.sessions.forget(user)
        for message in history.messages:
            session = self.sessions.open(user)  # the state as saved after the previous session
            session.write([message])
            self.sessions.save(session)
            self.session_writes += 1
        state = self.sessions.open(user).state
        if state is None:  # an empty history: zeros, so states stack
            return self._final_state(1, next(self.memory_model.parameters()).device)
        return state

    def cost(self) -> dict[str, Any]:
        return {**super().cost(), "session_writes": self.session_writes}


__all__ = ["DeltaMemSessionsMethod"]
