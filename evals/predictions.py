"""`predictions.jsonl`: one line per (question, condition), appended as answers arrive.

A crash can leave at most a partial last line; opening the store drops it, so a rerun continues
from the last complete line and never writes a question twice. A damaged complete line (hand
edits, a disk error) is quarantined, named, and its question answered again. Sharded runs give each rank its
own file (`predictions.rank{r}.jsonl`) and rank 0 merges them into `predictions.jsonl` in the
unsharded order once every rank has written its `done.rank{r}` marker.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence


def scan_rows(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
    """(rows, damaged) of a predictions file: every complete line that is a JSON prediction (the first
    of each (id, condition)), and (line number, text, reason) of every other complete line. A partial
    last line (no newline: a crash mid-write) is neither: it is simply unwritten."""
    if not path.is_file():
        return [], []
    rows: list[dict[str, Any]] = []
    damaged: list[tuple[int, str, str]] = []
    seen: set[tuple[str, str]] = set()
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")[
        :-1
    ]  # the piece after the last \n is partial
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            key = (row["id"], row["condition"])
        except (json.JSONDecodeError, KeyError, TypeError):
            damaged.append((number, line, "not a JSON prediction with id and condition"))
            continue
        if key in seen:
            damaged.append((number, line, f"a second row for {key}"))
            continue
        seen.add(key)
        rows.append(row)
    return rows, damaged


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The predictions of `path` (damaged lines and a partial last line left out; see `scan_rows`)."""
    return scan_rows(path)[0]


class PredictionStore:
    """Append-only prediction rows keyed by (id, condition).

    Opening a file repairs it, loudly: a partial last line (a crash) is cut; a complete line that is
    not a prediction, or repeats one, is moved to `<name>.quarantine.jsonl` (with its line number
    and the reason, named on stderr) and the file is rewritten without it, so the count of answered
    questions is never short and a rerun never appends a question twice."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_partial_line()
        self.rows, damaged = scan_rows(self.path)
        if damaged:
            self._quarantine(damaged)
        self.done = {(r["id"], r["condition"]) for r in self.rows}

    @property
    def quarantine_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".quarantine.jsonl")

    def _quarantine(self, damaged: list[tuple[int, str, str]]) -> None:
        with self.quarantine_path.open("a", encoding="utf-8") as handle:
            for number, text, reason in damaged:
                handle.write(
                    json.dumps({"file": self.path.name, "line": number, "reason": reason, "text": text}) + "\n"
                )
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows), encoding="utf-8")
        tmp.replace(self.path)
        lines = ", ".join(str(n) for n, _, _ in damaged[:10]) + (" …" if len(damaged) > 10 else "")
        print(
            f"[evals] {self.path}: {len(damaged)} damaged line(s) ({lines}: {damaged[0][2]}) moved to "
            f"{self.quarantine_path.name}; their questions are answered again",
            file=sys.stderr,
        )

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
