"""Read back what wandb 0.31 (wandb-core) writes offline, for the tests.

An offline run is a folder `offline-run-<time>-<id>/` holding `run-<id>.wandb` (a LevelDB-style log
of protobuf `Record`s: 32 KiB blocks, a 7-byte file header, a 7-byte header per record piece) and the
logged tables as JSON under `files/media/table/`. wandb 0.31 has no Python reader of its own.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32768
HEADER = 7  # file header ":W&B" + magic + version; and each piece's crc32 (4) + length (2) + type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def offline_env(monkeypatch: Any, root: Path) -> dict[str, str]:
    """Offline, silent wandb whose own files (settings, artifact staging, cache) stay under `root`."""
    names = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")
    folders = {name: root / name.lower() for name in names}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    values = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", **{k: str(v) for k, v in folders.items()}}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def record_bytes(path: Path) -> Iterator[bytes]:
    """The records of a `.wandb` file, their pieces joined."""
    data = Path(path).read_bytes()
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        piece = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield piece
        elif kind == FIRST:
            pending = piece
        elif kind == MIDDLE:
            pending += piece
        elif kind == LAST:
            yield pending + piece
            pending = b""


@dataclass
class OfflineRun:
    folder: Path
    run_id: str = ""
    group: str = ""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False

    def history_keys(self) -> set[str]:
        return {key for row in self.history for key in row}

    def table(self, key: str) -> dict[str, Any]:
        """A logged table's {"columns": [...], "data": [[...], ...]}, from its JSON file."""
        return json.loads((self.folder / "files" / self.summary[key]["path"]).read_text())


def _key(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def parse_run(folder: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun(Path(folder))
    (path,) = Path(folder).glob("run-*.wandb")
    for blob in record_bytes(path):
        record = pb.Record()
        record.ParseFromString(blob)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.group, run.name = record.run.run_id, record.run.run_group, record.run.display_name
            for item in record.run.config.update:
                _set(run.config, _key(item), json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                _set(run.config, _key(item), json.loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, _key(item), json.loads(item.value_json))
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, _key(item), json.loads(item.value_json))
            run.history.append(row)
        elif kind == "exit":
            run.finished = True
    return run


def read_run(folder: Path, timeout_s: float = 20.0) -> OfflineRun:
    """The run of an offline folder once its exit record is written (wandb-core may still be
    flushing the file after `finish()` returns)."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = parse_run(folder)
        if run.finished or time.monotonic() > deadline:
            return run
        time.sleep(0.25)


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run below `root`, oldest folder first."""
    return [read_run(p) for p in sorted(Path(root).rglob("offline-run-*")) if p.is_dir()]
