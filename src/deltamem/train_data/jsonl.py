"""User episodes from a JSON-lines file: one chat per line, the last assistant message is the answer.

Each non-blank line is an object `{"messages": [{"role": ..., "content": ...}, ...], "id"?: str,
"meta"?: {...}}`. Roles are system, user and assistant; the last message must be the assistant's
answer and the one before it the user's question. Every problem is a one-line `ValueError` of the
form `<file>:<line>: <problem>`.

`validate_chat` and `chat_episode` check one such record given as any mapping (a JSON line's object
or a Hugging Face dataset row), so `HubChats` shares them; it passes `null_is_absent=True`, as a
dataset column that only some rows fill holds None (null) in the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

ROLES = ("system", "user", "assistant")


def validate_chat(obj: object, where: str, null_is_absent: bool = False) -> tuple[list[dict], str | None, dict]:
    """Validated (messages, id or None, meta) of one chat record; raises ValueError prefixed with `where`.

    With `null_is_absent`, `"meta": null` counts as no meta (a null id always counts as no id)."""
    if not isinstance(obj, Mapping):
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
        if not isinstance(msg, Mapping) or "role" not in msg or "content" not in msg:
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
    meta = obj.get("meta", None if null_is_absent else {})
    if not (meta is None and null_is_absent) and not isinstance(meta, Mapping):
        raise ValueError(f'{where}: "meta" must be an object, got {type(meta).__name__}')
    return clean, None if episode_id is None else str(episode_id), dict(meta or {})


def chat_episode(
    obj: object, where: str, default_id: str, extra_meta: Mapping, null_is_absent: bool = False
) -> dict:
    """The common episode record of one validated chat; `extra_meta` (where it came from) wins over its meta."""
    messages, episode_id, meta = validate_chat(obj, where, null_is_absent)
    return {
        "id": episode_id or default_id,
        "messages": messages,
        "answer": messages[-1]["content"],
        "meta": {**meta, **extra_meta},
    }


def copy_episode(record: Mapping) -> dict:
    """A fresh copy of a cached record, so callers cannot alter the cache."""
    return {
        "id": record["id"],
        "messages": [dict(m) for m in record["messages"]],
        "answer": record["answer"],
        "meta": dict(record["meta"]),
    }


def read_jsonl(path: str | Path) -> Iterator[tuple[int, object, str]]:
    """(line number, parsed object, where) per non-blank line; bad JSON raises `<file>:<line>: bad JSON`."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: bad JSON: {exc.msg} (column {exc.colno})") from None
            yield number, obj, where


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
            records = [
                chat_episode(obj, where, f"{file.stem}:{number}", {"source": self.path, "line": number})
                for number, obj, where in read_jsonl(self.path)
            ]
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
        return copy_episode(records[i])

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"JsonlChats(path={self.path!r})"
