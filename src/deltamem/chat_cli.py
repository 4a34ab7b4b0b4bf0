"""`python src/run.py task=chat task.user=alice adapter=<folder> [backbone=...]`: an interactive chat
whose memory is the user's δ-mem state, kept in `task.store` across runs.

Each line you type is answered from the state, streamed token by token, then written into it.
The state is saved on exit: at end of input, on `/quit`, and on Ctrl-C. Commands:
* `/stats`: turns, tokens written, the state's size;
* `/save`: save now;
* `/reset`: empty the memory (the saved copy goes at the next save);
* `/forget`: delete the saved memory now, and empty it;
* `/quit`: save and leave.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from omegaconf import DictConfig

from .session_runtime import open_manager
from .state_store import check_user_id

COMMANDS = ("/stats", "/save", "/reset", "/forget", "/quit")


def chat(
    cfg: DictConfig,
    user: str,
    store: str,
    window: int | None = None,
    system: str | None = None,
    recent_turns: int = 0,
    max_new_tokens: int = 256,
    read_line: Callable[[str], str] = input,
    write: Callable[[str], Any] = sys.stdout.write,
) -> dict[str, Any]:
    """Run the chat loop; returns the final stats (what `/stats` shows)."""
    check_user_id(user)
    settings = {"store": store, "window": window, "system": system, "recent_turns": recent_turns}
    manager = open_manager(cfg, settings)
    session = manager.open(user)
    stats = session.stats()
    write(f"δ-mem chat as {user!r}: {stats['turns']} turns remembered ({stats['state_bytes']} bytes of state). "
          f"Commands: {' '.join(COMMANDS)}\n")
    try:
        while True:
            try:
                line = read_line("you> ").strip()
            except EOFError:
                write("\n")
                break
            if not line:
                continue
            if line.startswith("/"):
                if line == "/quit":
                    break
                write(_command(line, manager, session) + "\n")
                continue
            write("δ-mem> ")
            with manager.user_lock(user), manager.model_lock:
                session.turn(line, max_new_tokens, on_text=lambda piece: (write(piece), sys.stdout.flush()))
            write("\n")
    finally:  # end of input, /quit and Ctrl-C alike
        manager.save(session)
        write(f"saved {user!r}: {session.meta.turns} turns\n")
    return session.stats()


def _command(line: str, manager: Any, session: Any) -> str:
    if line == "/stats":
        return json.dumps(session.stats())
    if line == "/save":
        manager.save(session)
        return f"saved ({session.meta.turns} turns)"
    if line == "/reset":
        session.reset()
        return "memory emptied (the saved copy is replaced at the next save)"
    if line == "/forget":
        existed = manager.forget(session.meta.user)
        session.reset()
        return "saved memory deleted" if existed else "nothing was saved"
    return f"unknown command {line!r}; commands: {' '.join(COMMANDS)}"


__all__ = ["chat"]
