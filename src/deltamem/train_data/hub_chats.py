"""Chat episodes from a Hugging Face hub dataset (or a local copy of its rows).

Each row is a chat record `{"messages": [{"role", "content"}, ...], "id"?: str, "meta"?: {...}}`
whose final assistant message is the target: the schema of `JsonlChats`, validated by the same code
(`jsonl.validate_chat`), with errors prefixed `<hub id>[<split>] row <i>` (or `<file>:<line>`,
`<file> row <i>` for a local copy). The default id of row i is `<hub id>[<split>]:<i>` wherever the
rows were read from, so a local copy yields the same episodes as the hub.

The hub is asked only when reachable: with HF_HUB_OFFLINE=1 or no TCP route to it, loading fails at
once with one line naming the hub id and the `path=` alternative (no minutes of HTTP retries).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from deltamem import backbones

from ..errors import UserError
from .jsonl import chat_episode, copy_episode, read_jsonl


class HubUnavailableError(UserError, RuntimeError):
    """The hub cannot be asked (offline or unreachable), or it could not serve the dataset."""


def hub_unavailable_reason() -> str | None:
    """Why the hub cannot be asked now (HF_HUB_OFFLINE, or one failed TCP connect), or None."""
    if backbones._hub_offline():
        return "HF_HUB_OFFLINE=1 is set"
    if not backbones.hub_reachable():
        return "the hub cannot be reached (a TCP connect to it failed)"
    return None


def load_hub_split(hub_id: str, split: str, revision: str | None, alternative: str) -> Any:
    """`datasets.load_dataset(hub_id, split=split, revision=revision)`, or one line naming `alternative`."""
    head = f"cannot load {hub_id!r} (split {split!r}, revision {revision!r}) from the hub"
    reason = hub_unavailable_reason()
    if reason:
        raise HubUnavailableError(f"{head}: {reason}; {alternative}")
    import datasets

    try:
        return datasets.load_dataset(hub_id, split=split, revision=revision)
    except Exception as exc:  # unknown repo, gated, bad revision, cache: say what to do instead
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise HubUnavailableError(f"{head}: {type(exc).__name__}: {first}; {alternative}") from exc


def read_local_rows(path: str) -> Iterator[tuple[object, str]]:
    """(row, where) for each record of a local .jsonl, .json (a list of rows) or .parquet file."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such file {path!r}")
    if file.suffix == ".jsonl":
        yield from ((obj, where) for _, obj, where in read_jsonl(file))
        return
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows: object = pq.read_table(file).to_pylist()
    elif file.suffix == ".json":
        try:
            rows = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: bad JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    else:
        raise ValueError(f"{path}: unknown file type {file.suffix!r} (expected .jsonl, .json or .parquet)")
    yield from ((row, f"{path} row {i}") for i, row in enumerate(rows))


class HubChats:
    """Episodes from the chat rows of `hub_id`'s `split` (at `revision`), or from `path`, a local copy.

    Construction is free: rows are loaded and checked on first use. `loaded_from` then says where
    they came from (`hub:<id>@<revision>` or `path:<file>`).
    """

    def __init__(self, hub_id: str, split: str = "train", revision: str | None = None, path: str | None = None) -> None:
        if not isinstance(hub_id, str) or not hub_id:
            raise ValueError(f"HubChats: hub_id must be a non-empty string, got {hub_id!r}")
        self.hub_id, self.split = hub_id, str(split)
        self.revision = None if revision is None else str(revision)
        self.path = None if path is None else str(path)
        self.loaded_from: str | None = None
        self._records: list[dict] | None = None

    def _rows(self) -> Iterator[tuple[object, str]]:
        if self.path is not None:
            return read_local_rows(self.path)
        alternative = (
            f"pass path=<a local .jsonl/.json/.parquet copy of its {self.split} rows> "
            "(train_data.path=...) instead"
        )
        rows: Sequence[Any] = load_hub_split(self.hub_id, self.split, self.revision, alternative)
        return ((rows[i], f"{self.hub_id}[{self.split}] row {i}") for i in range(len(rows)))

    def _load(self) -> list[dict]:
        if self._records is None:
            name = f"{self.hub_id}[{self.split}]"
            origin = {"source": self.hub_id, "split": self.split}
            records = [
                chat_episode(row, where, f"{name}:{i}", {**origin, "row": i}, null_is_absent=True)
                for i, (row, where) in enumerate(self._rows())
            ]
            if not records:
                raise ValueError(f"{self.path or name}: no episodes (no rows)")
            self._records = records
            self.loaded_from = f"path:{self.path}" if self.path else f"hub:{self.hub_id}@{self.revision or 'main'}"
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
        return f"HubChats(hub_id={self.hub_id!r}, split={self.split!r}, revision={self.revision!r}, path={self.path!r})"
