"""User episodes from a JSON-lines file: one chat per line, the last assistant message is the answer.

Each non-blank line is an object `{"messages": [{"role": ..., "content": ...}, ...], "id"?: str,
"meta"?: {...}}`. Roles are system, user and assistant; the last message must be the assistant's
answer and the one before it the user's question. Every problem is a one-line `ValueError` of the
form `<file>:<line>: <problem>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

ROLES = ("system", "user", "assistant")


def _parse_line(line: str, where: str) -> tuple[list[dict], str | None, dict]:
    """Validated (messages, id or None, meta) of one line; raises ValueError prefixed with `where`."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: bad JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" not in obj:
        raise ValueError(f'{where}: missing "messages"')
    messages = obj["messages"]
    if not isinstance(messages, list):
        raise ValueError(f'{where}: "messages" must be a list, got {type(messages).__name__}')
    if len(messages) < 2:
        raise ValueError(f"{where}: fewer than 2 messages ({len(messages)}); need a user question and an answer")
    clean = []
    for k, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise ValueError(f'{where}: message {k} needs both "role" and "content"')
        if msg["role"] not in ROLES:
            raise ValueError(f"{where}: message {k} has unknown role {msg['role']!r} (expected one of {list(ROLES)})")
        if not isinstance(msg["content"], str):
            raise ValueError(f"{where}: message {k} content must be a string, got {type(msg['content']).__name__}")
        clean.append({"role": msg["role"], "content": msg["content"]})
    if clean[-1]["role"] != "assistant":
        raise ValueError(f"{where}: last message must be from the assistant (the answer), got {clean[-1]['role']!r}")
    if clean[-2]["role"] != "user":
        raise ValueError(f"{where}: the message before the answer must be from the user, got {clean[-2]['role']!r}")
    episode_id = obj.get("id")
    if episode_id is not None and not isinstance(episode_id, (str, int)):
        raise ValueError(f'{where}: "id" must be a string or an integer, got {type(episode_id).__name__}')
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError(f'{where}: "meta" must be an object, got {type(meta).__name__}')
    return clean, None if episode_id is None else str(episode_id), meta


class JsonlChats:
    """Episodes from a JSONL file of chats. Construction is free; the file is read and checked on first use."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._records: list[dict] | None = None

    def _load(self) -> list[dict]:
        if self._records is None:
            file = Path(self.path)
            if not file.is_file():
                raise FileNotFoundError(f"JsonlChats: no such file {self.path!r}")
            records = []
            with file.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    messages, episode_id, meta = _parse_line(line, f"{self.path}:{number}")
                    records.append(
                        {
                            "id": episode_id or f"{file.stem}:{number}",
                            "messages": messages,
                            "answer": messages[-1]["content"],
                            "meta": {**meta, "source": self.path, "line": number},
                        }
                    )
            if not records:
                raise ValueError(f"{self.path}: no episodes (the file has no non-blank lines)")
            self._records = records
        return self._records

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, i: int) -> dict:
        records = self._load()
        if not -len(records) <= i < len(records):
            raise IndexError(f"episode {i} out of range for {len(records)} episodes")
        record = records[i]
        return {  # a fresh copy, so callers cannot alter the cache
            "id": record["id"],
            "messages": [dict(m) for m in record["messages"]],
            "answer": record["answer"],
            "meta": dict(record["meta"]),
        }

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"JsonlChats(path={self.path!r})"
