"""Reading a benchmark's local file, with errors that name the file, the line and the cause.

A truncated or empty JSON file, a JSONL line with a raw control character, an empty `.gz`: each is
a `BenchmarkDataError` of one line (`src/run.py` prints it and exits 1), never a bare
`JSONDecodeError … column 89750`. `looks_like_a_path` tells a missing local file from a hub id,
so a typo in a path is reported as a missing file, not sent to the hub.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from evals.types import BenchmarkDataError

DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".gz", ".parquet")


def looks_like_a_path(source: str) -> bool:
    """A local file was meant (absolute, ./ or ../, or a data suffix), not `owner/name` on the hub."""
    return source.startswith(("/", "./", "../", "~")) or source.endswith(DATA_SUFFIXES)


def missing_file(source: str, what: str) -> BenchmarkDataError:
    return BenchmarkDataError(
        f"{source}: {what} data file not found (set DELTAMEM_DATA_DIR or paths.data_dir to the folder that holds it)"
    )


def load_hub_dataset(source: str, what: str, *args: Any, **kwargs: Any) -> Any:
    """`datasets.load_dataset(source, *args, **kwargs)`, failing at once when the hub is unreachable
    (instead of minutes of HTTP retries), unless HF_DATASETS_OFFLINE=1 asks for the local cache."""
    import os

    from deltamem.backbones import hub_reachable

    if os.environ.get("HF_DATASETS_OFFLINE", "0") in ("0", "") and not hub_reachable():
        raise BenchmarkDataError(
            f"{source}: the Hugging Face hub is unreachable, so the {what} data cannot be downloaded; fetch it "
            f"where the hub is reachable and pass the file as benchmark.loader.source=<path> "
            f"(or set HF_DATASETS_OFFLINE=1 to read the datasets cache)"
        )
    import datasets

    return datasets.load_dataset(source, *args, **kwargs)


def _text(path: Path) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
                return handle.read()
        return path.read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:  # gzip.BadGzipFile is an OSError
        raise BenchmarkDataError(f"{path}: unreadable ({type(error).__name__}: {error})") from error


def read_json(path: Path) -> Any:
    """The JSON document in `path` (`.jsonl`: the list of its lines)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    text = _text(path)
    if not text.strip():
        raise BenchmarkDataError(f"{path}: the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        hint = " (the file ends early: truncated?)" if error.pos >= len(text.rstrip()) - 1 else ""
        raise BenchmarkDataError(
            f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}{hint}"
        ) from error


def read_jsonl(path: Path) -> list[Any]:
    """One JSON value per non-blank line of `path`."""
    path = Path(path)
    rows = []
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise BenchmarkDataError(
                f"{path}: line {number}: not valid JSON ({error.msg}, column {error.colno})"
            ) from error
    if not rows:
        raise BenchmarkDataError(f"{path}: the file is empty")
    return rows


def read_text(path: Path) -> str:
    """The decoded text of `path` (`.gz` decompressed); empty is an error."""
    text = _text(Path(path))
    if not text.strip():
        raise BenchmarkDataError(
            f"{path}: the file is empty{' after decompression' if str(path).endswith('.gz') else ''}"
        )
    return text


__all__ = ["load_hub_dataset", "looks_like_a_path", "missing_file", "read_json", "read_jsonl", "read_text"]
