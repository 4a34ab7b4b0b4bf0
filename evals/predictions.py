"""`predictions.jsonl`: one line per (question, condition), appended as answers arrive.

A crash can leave at most a partial last line; opening the store drops it, so a rerun continues
from the last complete line and never writes a question twice. Sharded runs give each rank its
own file (`predictions.rank{r}.jsonl`) and rank 0 merges them into `predictions.jsonl` in the
unsharded order once every rank has written its `done.rank{r}` marker.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of `path` (a partial last line from a crash is ignored)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # only the last line can be partial: everything after it is unwritten
    return rows


class PredictionStore:
    """Append-only prediction rows keyed by (id, condition)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = read_rows(self.path)
        self._truncate_partial_line()
        self.done = {(r["id"], r["condition"]) for r in self.rows}

    def _truncate_partial_line(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete != len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(complete)

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        new = [r for r in rows if (r["id"], r["condition"]) not in self.done]
        if not new:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            for row in new:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.rows.extend(new)
        self.done.update((r["id"], r["condition"]) for r in new)


def shard_file(run_dir: Path, rank: int, world_size: int) -> Path:
    return run_dir / ("predictions.jsonl" if world_size == 1 else f"predictions.rank{rank}.jsonl")


def mark_done(run_dir: Path, rank: int) -> None:
    (run_dir / f"done.rank{rank}").write_text("done\n")


def merge_shards(
    run_dir: Path, world_size: int, order: Sequence[tuple[str, str]], timeout_s: float = 24 * 3600
) -> list[dict[str, Any]]:
    """Rank 0: wait for every rank's marker, then write `predictions.jsonl` in `order` (id, condition).

    Raises if a row is missing or appears twice across shards."""
    deadline = time.monotonic() + timeout_s
    while not all((run_dir / f"done.rank{r}").is_file() for r in range(world_size)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir}: not every rank finished within {timeout_s:.0f} s")
        time.sleep(1.0)
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for rank in range(world_size):
        for row in read_rows(shard_file(run_dir, rank, world_size)):
            key = (row["id"], row["condition"])
            if key in by_key:
                raise ValueError(f"{run_dir}: {key} was answered by two ranks")
            by_key[key] = row
    missing = [key for key in order if key not in by_key]
    if missing:
        raise ValueError(f"{run_dir}: {len(missing)} predictions missing after merging shards, e.g. {missing[0]}")
    merged = [by_key[key] for key in order]
    tmp = run_dir / "predictions.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged), encoding="utf-8")
    tmp.replace(run_dir / "predictions.jsonl")
    return merged
